// The slide viewer: OpenSeadragon (served by the gateway from npm, loaded on
// first use) showing a job's slide as Deep Zoom, with a canvas over it for the
// tissue outline, the nuclei (outlines, fetched by viewport from /cells?bbox=
// when zoomed in) and their density (one grid from /cells/density, zoomed
// out). Every request carries the caller's identity headers (tiles too:
// OpenSeadragon loads them with fetch-like requests, not <img> tags).
"use strict";

// Nuclei are outlined from this zoom on (screen px per level-0 px): a nucleus is
// then some 5 screen px or more across; below it they are shown as density.
const OUTLINES_FROM_SCALE = 0.4;
const NUCLEUS_STROKE = "rgb(0, 255, 255)";
const SELECTED_FILL = "rgba(255, 0, 255, 0.55)";
const TISSUE_STROKE = "rgb(40, 220, 40)";
const DENSITY_RGB = [255, 110, 0];
const REGION_STROKE = "rgb(255, 215, 0)";

let openSeadragonLoading = null;

function loadOpenSeadragon() {
  if (window.OpenSeadragon) return Promise.resolve(window.OpenSeadragon);
  if (!openSeadragonLoading) {
    openSeadragonLoading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "/viewer-assets/openseadragon.min.js";
      script.onload = () => resolve(window.OpenSeadragon);
      script.onerror = () => {
        openSeadragonLoading = null;
        reject(new Error("the slide viewer is not installed on this gateway (make web)"));
      };
      document.head.append(script);
    });
  }
  return openSeadragonLoading;
}

// Point in polygon (even-odd) over a ring of [x, y] pairs.
function ringContains(ring, x, y) {
  let inside = false;
  for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
    const [xi, yi] = ring[i];
    const [xj, yj] = ring[j];
    if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

function ringPath(ring) {
  const path = new Path2D();
  ring.forEach(([x, y], k) => (k ? path.lineTo(x, y) : path.moveTo(x, y)));
  path.closePath();
  return path;
}

function boxContains(outer, inner) {
  return outer && inner[0] >= outer[0] && inner[1] >= outer[1] && inner[2] <= outer[2] && inner[3] <= outer[3];
}

class SlideViewer {
  // job: the job (its id, type and result files); headers: the caller's identity;
  // element: where the viewer goes; onSelect(feature | null): a nucleus was clicked.
  constructor({ job, headers, element, layers, onSelect, names }) {
    this.job = job;
    this.names = names; // result file names by role, from /result-files
    this.headers = headers;
    this.element = element;
    this.layers = layers; // { tissue, nuclei, density }: booleans, changed by the page
    this.onSelect = onSelect;
    this.nuclei = []; // { feature, ring, path, box }
    this.loadedBox = null; // the slide box this.nuclei covers
    this.request = 0; // the newest cells request; older answers are dropped
    this.tissue = [];
    this.density = null;
    this.selected = null;
    this.closed = false;
    this.region = null; // a box drawn by the user: [x0, y0, x1, y1], level-0 slide pixels
    this.drawing = null; // { start, onDrawn } while the next drag draws a box
  }

  async get(path) {
    const reply = await fetch(path, { headers: this.headers });
    if (!reply.ok) {
      const body = reply.headers.get("content-type")?.includes("json") ? await reply.json() : null;
      throw new Error(body?.message || `${reply.status} ${path}`);
    }
    return reply.json();
  }

  async open() {
    const OSD = await loadOpenSeadragon();
    const id = this.job.job_id;
    this.info = await this.get(`/jobs/${id}/deepzoom`);
    const files = this.job.result?.files || {};
    const hasCells = this.names.cells in files;
    const tissueFile = this.names.tissue;
    const [tissue, density] = await Promise.all([
      tissueFile in files ? this.get(`/jobs/${id}/results/${tissueFile}`) : null,
      hasCells ? this.get(`/jobs/${id}/cells/density?cell_px=0`) : null,
    ]);
    if (this.closed) return;
    this.hasCells = hasCells;
    this.tissue = (tissue?.features || []).flatMap((f) => f.geometry.coordinates.map(ringPath));
    // The density is drawn within the tissue only (its cells are squares of the
    // slide, and a square at the tissue's edge reaches onto the glass).
    this.tissueArea = null;
    if (this.tissue.length) {
      this.tissueArea = new Path2D();
      for (const path of this.tissue) this.tissueArea.addPath(path);
    }
    this.density = density && density.columns ? this.densityImage(density) : null;
    this.osd = OSD({
      element: this.element,
      prefixUrl: "/viewer-assets/images/",
      drawer: "canvas",
      loadTilesWithAjax: true,
      ajaxHeaders: this.headers,
      showNavigator: true,
      navigatorPosition: "BOTTOM_RIGHT",
      gestureSettingsMouse: { clickToZoom: false },
      maxZoomPixelRatio: 4,
      tileSources: {
        Image: {
          xmlns: "http://schemas.microsoft.com/deepzoom/2008",
          Url: `/jobs/${id}/slide_files/`,
          Format: this.info.format || "jpeg",
          Overlap: String(this.info.overlap),
          TileSize: String(this.info.tile_size),
          Size: { Width: String(this.info.width), Height: String(this.info.height) },
        },
      },
    });
    this.overlay = document.createElement("canvas");
    this.overlay.className = "viewer-overlay";
    this.osd.canvas.append(this.overlay);
    this.osd.addHandler("update-viewport", () => this.draw());
    this.osd.addHandler("animation-finish", () => this.fetchNuclei());
    this.osd.addHandler("open", () => this.fetchNuclei());
    this.osd.addHandler("canvas-click", (event) => {
      if (event.quick && !this.drawing) this.select(event.position);
    });
    this.osd.addHandler("canvas-press", (event) => {
      if (this.drawing) this.drawing.start = this.slidePoint(event.position);
    });
    this.osd.addHandler("canvas-drag", (event) => {
      if (!this.drawing?.start) return;
      event.preventDefaultAction = true; // draw, do not pan
      this.region = this.boxOn(this.drawing.start, this.slidePoint(event.position));
      this.draw();
    });
    this.osd.addHandler("canvas-drag-end", (event) => {
      if (!this.drawing?.start) return;
      event.preventDefaultAction = true;
      const { start, onDrawn } = this.drawing;
      this.drawing = null;
      delete this.element.dataset.drawing;
      const box = this.boxOn(start, this.slidePoint(event.position));
      this.region = box[2] - box[0] >= 1 && box[3] - box[1] >= 1 ? box : null;
      this.draw();
      onDrawn(this.region);
    });
  }

  // The next drag on the slide draws a box instead of moving the view;
  // onDrawn(box | null) gets it, in level-0 slide pixels, once released.
  drawRegion(onDrawn) {
    this.drawing = { start: null, onDrawn };
    this.element.dataset.drawing = "on";
  }

  // Level-0 slide pixels under a point of the viewer element.
  slidePoint(position) {
    const OSD = window.OpenSeadragon;
    const point = this.osd.viewport.viewerElementToImageCoordinates(new OSD.Point(position.x, position.y));
    return [point.x + (this.info.offset_x || 0), point.y + (this.info.offset_y || 0)];
  }

  // The box two corners span, in whole pixels, kept on the slide.
  boxOn([ax, ay], [bx, by]) {
    const { offset_x: ox = 0, offset_y: oy = 0, width, height } = this.info;
    const clampX = (v) => Math.round(Math.min(Math.max(v, ox), ox + width));
    const clampY = (v) => Math.round(Math.min(Math.max(v, oy), oy + height));
    return [clampX(Math.min(ax, bx)), clampY(Math.min(ay, by)), clampX(Math.max(ax, bx)), clampY(Math.max(ay, by))];
  }

  close() {
    this.closed = true;
    this.request += 1;
    this.osd?.destroy();
    this.osd = null;
  }

  densityImage(density) {
    const canvas = document.createElement("canvas");
    canvas.width = density.columns;
    canvas.height = density.rows;
    const context = canvas.getContext("2d");
    const image = context.createImageData(density.columns, density.rows);
    const counts = density.counts.map(Number);
    const sorted = counts.filter((c) => c > 0).sort((a, b) => a - b);
    const high = sorted.length ? sorted[Math.floor(sorted.length * 0.95)] || 1 : 1;
    counts.forEach((count, k) => {
      const alpha = count ? Math.round(255 * (0.2 + 0.45 * Math.min(1, count / high))) : 0;
      image.data.set([...DENSITY_RGB, alpha], k * 4);
    });
    context.putImageData(image, 0, 0);
    return { canvas, cell: density.cell_px, columns: density.columns, rows: density.rows, high };
  }

  // What the density's shades mean, for the page's legend.
  densityLegend() {
    if (!this.density) return "";
    const { cell, high } = this.density;
    return `Density: nuclei per ${cell} x ${cell} px square of tissue; palest 1, darkest ${high} or more`;
  }

  // The visible part of the slide, in level-0 slide pixels: [x0, y0, x1, y1].
  visibleBox() {
    const viewport = this.osd.viewport;
    const rect = viewport.viewportToImageRectangle(viewport.getBounds(true));
    const { offset_x: ox = 0, offset_y: oy = 0 } = this.info;
    return [rect.x + ox, rect.y + oy, rect.x + rect.width + ox, rect.y + rect.height + oy];
  }

  // Screen pixels per level-0 pixel now.
  scale() {
    const OSD = window.OpenSeadragon;
    const viewport = this.osd.viewport;
    const origin = viewport.imageToViewerElementCoordinates(new OSD.Point(0, 0));
    const unit = viewport.imageToViewerElementCoordinates(new OSD.Point(1000, 0));
    return (unit.x - origin.x) / 1000;
  }

  zoomedIn() {
    return this.scale() >= OUTLINES_FROM_SCALE;
  }

  async fetchNuclei() {
    if (!this.osd || !this.hasCells || !this.zoomedIn()) return;
    const visible = this.visibleBox();
    if (boxContains(this.loadedBox, visible)) return;
    const [x0, y0, x1, y1] = visible;
    const padX = (x1 - x0) / 4;
    const padY = (y1 - y0) / 4;
    const box = [x0 - padX, y0 - padY, x1 + padX, y1 + padY].map((v) => Math.round(v));
    const request = ++this.request;
    this.element.dataset.nuclei = "loading";
    const answer = await this.get(`/jobs/${this.job.job_id}/cells?bbox=${box.join(",")}`);
    if (request !== this.request || this.closed) return;
    this.nuclei = answer.features.map((feature) => {
      const ring = feature.geometry.coordinates[0];
      const xs = ring.map((p) => p[0]);
      const ys = ring.map((p) => p[1]);
      return { feature, ring, path: ringPath(ring), box: [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)] };
    });
    this.loadedBox = box;
    this.element.dataset.nuclei = String(this.nuclei.length);
    this.draw();
  }

  // Canvas pixels from slide pixels: scale, then translate (no rotation).
  transform(context) {
    const OSD = window.OpenSeadragon;
    const viewport = this.osd.viewport;
    const { offset_x: ox = 0, offset_y: oy = 0 } = this.info;
    const origin = viewport.imageToViewerElementCoordinates(new OSD.Point(0, 0));
    const scale = this.scale();
    const ratio = window.devicePixelRatio || 1;
    context.setTransform(ratio * scale, 0, 0, ratio * scale, ratio * (origin.x - ox * scale), ratio * (origin.y - oy * scale));
    return scale;
  }

  draw() {
    if (!this.osd) return;
    const canvas = this.overlay;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.round(this.osd.canvas.clientWidth * ratio);
    const height = Math.round(this.osd.canvas.clientHeight * ratio);
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const context = canvas.getContext("2d");
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.clearRect(0, 0, width, height);
    const scale = this.transform(context);
    const zoomedIn = this.zoomedIn();
    let mode = "none";
    if (!zoomedIn && this.layers.density && this.density) {
      const { canvas: grid, cell, columns, rows } = this.density;
      context.save();
      if (this.tissueArea) context.clip(this.tissueArea, "evenodd"); // holes stay clear
      context.imageSmoothingEnabled = false; // honest cells, no halo past the tissue
      context.drawImage(grid, 0, 0, columns * cell, rows * cell);
      context.restore();
      mode = "density";
    }
    if (zoomedIn && this.layers.nuclei) {
      if (this.selected) { // under the outlines: the selected one keeps its edge
        context.fillStyle = SELECTED_FILL;
        context.fill(this.selected.path);
      }
      context.lineWidth = 2 / scale;
      context.strokeStyle = NUCLEUS_STROKE;
      for (const nucleus of this.nuclei) context.stroke(nucleus.path);
      mode = "nuclei";
    }
    if (this.layers.tissue) {
      context.lineWidth = 2.5 / scale;
      context.strokeStyle = TISSUE_STROKE;
      for (const path of this.tissue) context.stroke(path);
    }
    if (this.region) {
      const [x0, y0, x1, y1] = this.region;
      context.lineWidth = 2 / scale;
      context.setLineDash([8 / scale, 6 / scale]);
      context.strokeStyle = REGION_STROKE;
      context.strokeRect(x0, y0, x1 - x0, y1 - y0);
      context.setLineDash([]);
    }
    this.element.dataset.mode = mode;
  }

  // The nucleus under a click (viewer element coordinates), if any.
  select(position) {
    const OSD = window.OpenSeadragon;
    const point = this.osd.viewport.viewerElementToImageCoordinates(new OSD.Point(position.x, position.y));
    const x = point.x + (this.info.offset_x || 0);
    const y = point.y + (this.info.offset_y || 0);
    const hit = this.layers.nuclei && this.zoomedIn()
      ? this.nuclei.find((n) => x >= n.box[0] && x <= n.box[2] && y >= n.box[1] && y <= n.box[3] && ringContains(n.ring, x, y))
      : undefined;
    this.selected = hit || null;
    this.onSelect(this.selected ? this.selected.feature : null);
    this.draw();
  }
}

window.SlideViewer = SlideViewer;
