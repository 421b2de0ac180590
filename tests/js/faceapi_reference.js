#!/usr/bin/env node
// Reference run of face-api's FaceExpressionNet with face-api's own code on pure-JS TF.js.
//
// Usage: NODE_PATH=<node_modules with @tensorflow/tfjs 4.22.0> \
//   node faceapi_reference.js <face-api package dir> <crops.bin> <out.json> [weights.bin]
//
// crops.bin: little-endian uint32 n, then per crop uint32 height, uint32 width and
// height*width*3 RGB uint8 bytes (row-major, HWC); crops may differ in size. Each crop
// becomes an int32 tensor3d, as face-api's Node demos build from decoded images, and goes through face-api's own pipeline: NetInput.toBatchTensor(112)
// (pad to square, tf.image.resizeBilinear), normalize, the dense blocks, the fc layer, softmax.
// face-api's dist/face-api.node-wasm.js is loaded; it only re-exports
// @tensorflow/tfjs-backend-wasm, which is replaced by an empty stub so that the plain CPU
// backend of @tensorflow/tfjs runs everything (tfjs-node would need a native binary).
// out.json: {probs: [n][7], features: [n][256], labels, tfjs, backend}.
// weights.bin (optional): face-api's loaded parameter tensors as float32, in manifest order.
'use strict';

const fs = require('fs');
const path = require('path');
const Module = require('module');

const STUB = path.join(__dirname, 'faceapi_wasm_stub.js');
const resolve = Module._resolveFilename;
Module._resolveFilename = function resolveWithStub(request, ...rest) {
  if (request === '@tensorflow/tfjs-backend-wasm') return STUB;
  return resolve.call(this, request, ...rest);
};

async function main() {
  const [pkgDir, cropsPath, outPath, weightsPath] = process.argv.slice(2);
  if (!pkgDir || !cropsPath || !outPath) {
    console.error('usage: faceapi_reference.js <face-api dir> <crops.bin> <out.json> [weights.bin]');
    process.exit(2);
  }
  const tf = require('@tensorflow/tfjs');
  const faceapi = require(path.join(pkgDir, 'dist', 'face-api.node-wasm.js'));
  await tf.setBackend('cpu');
  await tf.ready();

  const net = faceapi.nets.faceExpressionNet;
  await net.loadFromDisk(path.join(pkgDir, 'model'));

  const buf = fs.readFileSync(cropsPath);
  const n = buf.readUInt32LE(0);
  let offset = 4;
  const probs = [];
  const features = [];
  for (let i = 0; i < n; i += 1) {
    const h = buf.readUInt32LE(offset);
    const w = buf.readUInt32LE(offset + 4);
    const bytes = buf.subarray(offset + 8, offset + 8 + h * w * 3);
    if (bytes.length !== h * w * 3) throw new Error(`crops.bin: crop ${i} is truncated`);
    offset += 8 + h * w * 3;
    const img = tf.tensor3d(Int32Array.from(bytes), [h, w, 3], 'int32');
    const expr = await net.predictExpressions(img);  // face-api's public call, one face
    probs.push(faceapi.FACE_EXPRESSION_LABELS.map((k) => expr[k]));
    const netInput = await faceapi.toNetInput(img);
    const feat = net.faceFeatureExtractor.forwardInput(netInput);
    features.push(Array.from(feat.dataSync()));
    feat.dispose();
    img.dispose();
  }
  if (offset !== buf.length) throw new Error(`crops.bin: ${buf.length - offset} bytes after the last crop`);

  if (weightsPath) {
    const manifest = JSON.parse(fs.readFileSync(
      path.join(pkgDir, 'model', 'face_expression_model-weights_manifest.json'), 'utf8'));
    const params = {};
    net.faceFeatureExtractor.getParamList().forEach((p) => { params[p.path] = p.tensor; });
    net.getParamList().forEach((p) => { params[p.path] = p.tensor; });
    const chunks = manifest[0].weights.map((spec) => {
      const t = params[spec.name];
      if (!t) throw new Error(`face-api has no loaded parameter ${spec.name}`);
      return Buffer.from(new Float32Array(t.dataSync()).buffer);
    });
    fs.writeFileSync(weightsPath, Buffer.concat(chunks));
  }

  fs.writeFileSync(outPath, JSON.stringify({
    labels: Array.from(faceapi.FACE_EXPRESSION_LABELS),
    probs,
    features,
    tfjs: tf.version.tfjs,
    backend: tf.getBackend(),
  }));
}

main().catch((err) => {
  console.error(`faceapi_reference: ${err.message}`);
  process.exit(1);
});
