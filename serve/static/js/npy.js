// A result fetched as .npy (uint8 [F, H, W, 3], the exact frames) shown as a looping animation on a canvas.

export function parseNpy(buffer) {
  const bytes = new Uint8Array(buffer);
  const major = bytes[6];
  const headerLength = major >= 2 ? new DataView(buffer).getUint32(8, true) : new DataView(buffer).getUint16(8, true);
  const start = major >= 2 ? 12 : 10;
  const header = new TextDecoder().decode(bytes.subarray(start, start + headerLength));
  const shape = header.match(/'shape':\s*\(([^)]*)\)/)[1].split(",").filter((s) => s.trim()).map(Number);
  if (!header.includes("'|u1'") || shape.length !== 4 || shape[3] !== 3) {
    throw new Error(`not uint8 [F, H, W, 3] frames: ${header.trim()}`);
  }
  return { shape, data: bytes.subarray(start + headerLength) };
}

export function animateFrames(canvas, { shape, data }, fps = 8) {
  const [frames, height, width] = shape;
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  const images = [];
  for (let f = 0; f < frames; f += 1) {
    const image = context.createImageData(width, height);
    for (let i = 0, j = f * height * width * 3; i < width * height; i += 1, j += 3) {
      image.data.set([data[j], data[j + 1], data[j + 2], 255], i * 4);
    }
    images.push(image);
  }
  let frame = 0;
  const show = () => {
    context.putImageData(images[frame], 0, 0);
    frame = (frame + 1) % frames;
  };
  show();
  return setInterval(show, 1000 / fps);
}
