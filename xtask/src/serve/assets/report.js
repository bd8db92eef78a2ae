"use strict";
// Draws the gallery's 28×28 test images from their hex-encoded pixels.
for (const canvas of document.querySelectorAll("canvas[data-pixels]")) {
  const hex = canvas.dataset.pixels;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(28, 28);
  for (let i = 0; i < 784; i++) {
    const v = parseInt(hex.substr(2 * i, 2), 16) || 0;
    img.data.set([v, v, v, 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
}
