// Empty stand-in for @tensorflow/tfjs-backend-wasm, which face-api's node-wasm build only
// re-exports: the reference run (faceapi_reference.js) uses the plain CPU backend instead.
'use strict';

module.exports = {};
