"""The chain's scrubber in the browser: the kept states go to the page once (`page_data`), and `SCRUB_JS`, bound to
the k slider's input event with no Python function, redraws a frame from them on a <canvas> laid over the chain's
picture: no server call per step of the drag. It draws what `canvas.PointCanvas.render` draws (the same backdrop,
pixel mapping and colour; round dots instead of Gaussian splats), optionally with path trails for a few dozen points
through every sent state from x_N down to x_k, and a density estimate of the chain's marginal at k (a 2-D histogram
of the sent state, box-blurred). Knows arrays, not models; never imports gradio.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from genapp.render.style import INK, MUTED, SAMPLES

TRAILS = "path trails"
DENSITY = "density of x_k"
SHOW_CHOICES = (TRAILS, DENSITY)


def png_data_url(image: np.ndarray) -> str:
    """A uint8 (H, W, 3) image as a data: URL (PNG)."""
    out = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(out, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def page_data(run_id: str, ks: np.ndarray, sigmas: np.ndarray, positions: np.ndarray, lim: float,
              background: np.ndarray, *, num_steps: int, subtitles: list[str], corner: str,
              color: str = SAMPLES) -> dict:
    """What the page keeps to scrub one run: positions int16 (m, n, 2) as base64 (little-endian), the ks and a
    subtitle per state, the backdrop as a PNG data URL, the pixel mapping (lim, size) and the dots' colour."""
    q = np.ascontiguousarray(positions, dtype="<i2")
    return {"id": run_id, "ks": [int(k) for k in ks], "sigmas": [float(s) for s in sigmas], "m": int(q.shape[0]),
            "n": int(q.shape[1]), "lim": float(lim), "size": int(background.shape[0]), "num_steps": int(num_steps),
            "positions": base64.b64encode(q.tobytes()).decode("ascii"), "background": png_data_url(background),
            "subtitles": list(subtitles), "corner": corner, "color": color, "ink": INK, "muted": MUTED}


# (k, pack, shown) -> []: draws state nearest k of `pack` (page_data's dict) over #chain-frame's picture; the time of
# each redraw goes to window.genappScrub.times (ms). While dragging, the inside-step readout is dimmed: it shows the
# k of the last release until the step there is computed.
SCRUB_JS = r"""
(k, pack, shown) => {
  const S = window.genappScrub || (window.genappScrub = {times: [], key: null});
  const host = document.querySelector('#chain-frame');
  const old = host && host.querySelector('canvas.genapp-scrub');
  if (!pack || !host) { if (old) old.style.display = 'none'; return []; }
  const t0 = performance.now();
  if (S.key !== pack.id) {
    const bin = atob(pack.positions), bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    S.pos = new Int16Array(bytes.buffer); S.key = pack.id;
    S.bg = new Image(); S.bg.onload = () => { if (S.last) S.last(); }; S.bg.src = pack.background;
    const dot = document.createElement('canvas'); dot.width = dot.height = 8;
    const d = dot.getContext('2d'), g = d.createRadialGradient(4, 4, 0, 4, 4, 4);
    g.addColorStop(0, pack.color); g.addColorStop(0.45, pack.color); g.addColorStop(1, 'rgba(255,255,255,0)');
    d.fillStyle = g; d.fillRect(0, 0, 8, 8); S.dot = dot;
  }
  const img = host.querySelector('img');
  let cv = old;
  if (!cv) {
    cv = document.createElement('canvas'); cv.className = 'genapp-scrub';
    cv.style.position = 'absolute'; cv.style.pointerEvents = 'none'; cv.style.zIndex = 5;
    new MutationObserver(() => {
      const now = host.querySelector('img');
      if (now && now.getAttribute('src') !== S.src) cv.style.display = 'none';
    }).observe(host, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
  }
  if (!img) return [];
  const parent = img.parentElement;
  if (cv.parentElement !== parent) { parent.style.position = 'relative'; parent.appendChild(cv); }
  S.src = img.getAttribute('src');
  const size = pack.size, ir = img.getBoundingClientRect(), pr = parent.getBoundingClientRect();
  const side = Math.min(ir.width, ir.height);
  cv.width = cv.height = size; cv.style.width = cv.style.height = side + 'px';
  cv.style.left = (ir.left - pr.left + (ir.width - side) / 2) + 'px';
  cv.style.top = (ir.top - pr.top + (ir.height - side) / 2) + 'px';
  cv.style.display = 'block';
  let j = 0;
  for (let i = 1; i < pack.m; i++) if (Math.abs(pack.ks[i] - k) < Math.abs(pack.ks[j] - k)) j = i;
  const draw = () => {
    const c = cv.getContext('2d'), n = pack.n, lim = pack.lim, f = lim / 32767, sc = size / (2 * lim);
    const px = q => (q * f + lim) * sc, py = q => (lim - q * f) * sc, P = S.pos;
    c.globalAlpha = 1;
    if (S.bg.complete && S.bg.naturalWidth) c.drawImage(S.bg, 0, 0, size, size);
    else { c.fillStyle = '#fff'; c.fillRect(0, 0, size, size); }
    if (shown && shown.includes('density of x_k')) {
      const B = 64, h = new Float32Array(B * B), o = j * n * 2;
      for (let i = 0; i < n; i++) {
        const a = P[o + 2 * i], b = P[o + 2 * i + 1];
        if (a === -32768 || b === -32768) continue;
        const bx = Math.min(B - 1, Math.floor(px(a) / size * B)), by = Math.min(B - 1, Math.floor(py(b) / size * B));
        if (bx >= 0 && by >= 0) h[by * B + bx] += 1;
      }
      for (let pass = 0; pass < 2; pass++) for (const [dx, dy] of [[1, 0], [0, 1]]) {
        const t = h.slice();
        for (let y = 0; y < B; y++) for (let x = 0; x < B; x++) {
          let s = t[y * B + x], w = 1;
          const x1 = x - dx, y1 = y - dy, x2 = x + dx, y2 = y + dy;
          if (x1 >= 0 && y1 >= 0) { s += t[y1 * B + x1]; w++; }
          if (x2 < B && y2 < B) { s += t[y2 * B + x2]; w++; }
          h[y * B + x] = s / 3;
        }
      }
      let top = 0; for (let i = 0; i < B * B; i++) top = Math.max(top, h[i]);
      const off = document.createElement('canvas'); off.width = off.height = B;
      const oc = off.getContext('2d'), im = oc.createImageData(B, B);
      for (let i = 0; i < B * B; i++) {
        const a = top > 0 ? Math.pow(h[i] / top, 0.6) : 0;
        im.data[4 * i] = 59; im.data[4 * i + 1] = 28; im.data[4 * i + 2] = 74; im.data[4 * i + 3] = Math.round(150 * a);
      }
      oc.putImageData(im, 0, 0); c.imageSmoothingEnabled = true; c.drawImage(off, 0, 0, size, size);
    }
    if (shown && shown.includes('path trails')) {
      c.strokeStyle = pack.ink; c.globalAlpha = 0.45; c.lineWidth = 1;
      const T = Math.min(40, n);
      for (let t = 0; t < T; t++) {
        const i = Math.floor(t * n / T);
        c.beginPath(); let pen = false;
        for (let s = 0; s <= j; s++) {
          const a = P[(s * n + i) * 2], b = P[(s * n + i) * 2 + 1];
          if (a === -32768 || b === -32768) { pen = false; continue; }
          if (pen) c.lineTo(px(a), py(b)); else c.moveTo(px(a), py(b));
          pen = true;
        }
        c.stroke();
      }
    }
    c.globalAlpha = 0.8;
    const o = j * n * 2;
    for (let i = 0; i < n; i++) {
      const a = P[o + 2 * i], b = P[o + 2 * i + 1];
      if (a !== -32768 && b !== -32768) c.drawImage(S.dot, px(a) - 2.5, py(b) - 2.5, 5, 5);
    }
    c.globalAlpha = 1;
    const title = 'k = ' + pack.ks[j], sub = pack.subtitles[j];
    c.font = 'bold 22px sans-serif'; const w1 = c.measureText(title).width;
    c.font = '15px sans-serif'; const w2 = c.measureText(sub).width;
    c.fillStyle = 'rgba(255,255,255,0.85)'; c.fillRect(4, 6, Math.max(w1, w2) + 14, 54);
    c.fillStyle = pack.ink; c.font = 'bold 22px sans-serif'; c.fillText(title, 10, 30);
    c.fillStyle = pack.muted; c.font = '15px sans-serif'; c.fillText(sub, 10, 52);
    c.font = '13px sans-serif'; const w3 = c.measureText(pack.corner).width;
    c.fillStyle = 'rgba(255,255,255,0.85)'; c.fillRect(size - w3 - 16, size - 32, w3 + 12, 20);
    c.fillStyle = pack.muted; c.fillText(pack.corner, size - w3 - 10, size - 17);
    c.fillStyle = '#e5e7eb'; c.fillRect(0, size - 4, size, 4);
    c.fillStyle = pack.color; c.fillRect(0, size - 4, size * (1 - pack.ks[j] / Math.max(pack.num_steps, 1)), 4);
  };
  S.last = draw; draw();
  host.dataset.scrubK = k; host.dataset.scrubShown = pack.ks[j];  // asked, and the nearest sent k drawn
  const readout = document.querySelector('#inside-readout');
  if (readout) readout.style.opacity = '0.45';
  S.times.push(performance.now() - t0); if (S.times.length > 1000) S.times.shift();
  return [];
}
"""

# the inside-step readout is current again (after the step at the released k is computed)
UNDIM_JS = "() => { const r = document.querySelector('#inside-readout'); if (r) r.style.opacity = ''; return []; }"
