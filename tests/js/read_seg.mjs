// Read a DICOM SEG with dcmjs and print what a web viewer would see, as JSON.
// Usage: node read_seg.mjs FILE
import { readFileSync } from "node:fs";
import dcmjs from "dcmjs";

const path = process.argv[2];
const bytes = readFileSync(path);
const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
const message = dcmjs.data.DicomMessage.readFile(buffer);
const dataset = dcmjs.data.DicomMetaDictionary.naturalizeDataset(message.dict);

// BINARY segmentations pack one bit per pixel, least significant bit first
// (PS3.5 section 8.1.1), so counting set bits gives the number of voxels.
const pixelData = new Uint8Array(dataset.PixelData[0]);
let setBits = 0;
for (const byte of pixelData) {
  let value = byte;
  while (value) {
    setBits += value & 1;
    value >>= 1;
  }
}

const segments = dataset.SegmentSequence;
const segmentList = Array.isArray(segments) ? segments : [segments];
console.log(
  JSON.stringify({
    sopClassUid: dataset.SOPClassUID,
    segmentationType: dataset.SegmentationType,
    numberOfFrames: Number(dataset.NumberOfFrames),
    rows: dataset.Rows,
    columns: dataset.Columns,
    segmentLabels: segmentList.map((segment) => segment.SegmentLabel),
    patientName: dataset.PatientName?.[0]?.Alphabetic ?? dataset.PatientName,
    setBits,
  }),
);
