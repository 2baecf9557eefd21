// The dashboard's only script of its own: draws the chart of every canvas that names its data
// (data-src, a JSON answer of the dashboard) with Chart.js. No inline script anywhere (CSP).
"use strict";

function drawChart(canvas) {
  fetch(canvas.dataset.src, { credentials: "same-origin" })
    .then((answer) => answer.json())
    .then((data) => {
      new window.Chart(canvas, {
        type: "bar",
        data: {
          labels: data.labels,
          datasets: [
            { label: "records read", data: data.records },
            { label: "failed or unknown", data: data.failures },
          ],
        },
        options: { responsive: true, maintainAspectRatio: false, animation: false },
      });
    });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("canvas[data-src]").forEach(drawChart);
});
