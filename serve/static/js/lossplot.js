// The tuning loss as it comes: a line on a canvas, steps on x, loss on y (its own range).

export function drawLoss(canvas, curve) {
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  context.strokeStyle = "#ccc";
  context.strokeRect(0.5, 0.5, width - 1, height - 1);
  curve = (curve || []).filter((point) => Number.isFinite(point[1])); // a diverged step is recorded as null
  if (curve.length === 0) return;
  const steps = curve.map((point) => point[0]);
  const losses = curve.map((point) => point[1]);
  const [minStep, maxStep] = [Math.min(...steps), Math.max(...steps)];
  const [low, high] = [Math.min(...losses), Math.max(...losses)];
  const pad = 6;
  const x = (step) => pad + ((step - minStep) / Math.max(maxStep - minStep, 1)) * (width - 2 * pad);
  const y = (loss) => height - pad - ((loss - low) / Math.max(high - low, 1e-12)) * (height - 2 * pad);
  context.strokeStyle = "#2563eb";
  context.lineWidth = 1.5;
  context.beginPath();
  curve.forEach(([step, loss], i) => (i === 0 ? context.moveTo(x(step), y(loss)) : context.lineTo(x(step), y(loss))));
  if (curve.length === 1) context.arc(x(steps[0]), y(losses[0]), 2, 0, 2 * Math.PI);
  context.stroke();
  context.fillStyle = "#555";
  context.font = "11px sans-serif";
  context.fillText(`loss ${losses[losses.length - 1].toFixed(4)} (range ${low.toFixed(3)}–${high.toFixed(3)})`, pad, 14);
}
