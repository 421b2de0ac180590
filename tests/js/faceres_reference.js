// Reference run of the HSE FaceRes TF.js graph model with pure-JS @tensorflow/tfjs 4.22.0.
// usage: node faceres_reference.js MODEL_JSON INPUT_BIN N OUTPUT_BIN
//   INPUT_BIN: N x 224 x 224 x 3 float32 little-endian (NHWC, already normalised)
//   OUTPUT_BIN: N x 1125 float32: descriptor global_pooling/Mean (1024), gender (1), age (100)
// The weights are read from the files next to model.json and given to tf.io.fromMemory,
// so TF.js itself does the fp16 dequantisation and runs its own kernels (cpu backend).
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

async function main() {
  const [modelJson, inputBin, nStr, outputBin] = process.argv.slice(2);
  const n = parseInt(nStr, 10);
  const model = JSON.parse(fs.readFileSync(modelJson, 'utf8'));
  const specs = [];
  const buffers = [];
  for (const group of model.weightsManifest) {
    for (const p of group.paths) buffers.push(fs.readFileSync(path.join(path.dirname(modelJson), p)));
    specs.push(...group.weights);
  }
  const all = Buffer.concat(buffers);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  await tf.setBackend('cpu');
  const graph = await tf.loadGraphModel(tf.io.fromMemory({
    modelTopology: model.modelTopology, weightSpecs: specs, weightData,
    format: model.format, generatedBy: model.generatedBy, convertedBy: model.convertedBy,
  }));
  const raw = fs.readFileSync(inputBin);
  const x = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
  const per = 224 * 224 * 3;
  if (x.length !== n * per) throw new Error(`input has ${x.length} floats, expected ${n * per}`);
  const out = new Float32Array(n * 1125);
  for (let i = 0; i < n; i++) {
    const t = tf.tensor4d(x.subarray(i * per, (i + 1) * per), [1, 224, 224, 3]);
    const [d, g, a] = graph.execute(t, ['global_pooling/Mean', 'gender_pred/Sigmoid', 'age_pred/Softmax']);
    out.set(d.dataSync(), i * 1125);
    out.set(g.dataSync(), i * 1125 + 1024);
    out.set(a.dataSync(), i * 1125 + 1025);
    tf.dispose([t, d, g, a]);
  }
  fs.writeFileSync(outputBin, Buffer.from(out.buffer));
  console.log(JSON.stringify({ n, backend: tf.getBackend(), version: tf.version.tfjs }));
}

main().catch((e) => { console.error(e.message); process.exit(1); });
