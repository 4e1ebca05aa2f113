"""Draws docs/architecture.png (python docs/architecture.py; needs matplotlib)."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

BOXES = {
    "clients": (0.3, 3.6, "Clients\nbrowser UI, curl, tritonclient,\nKServe SDK, AzureMLDeploy page"),
    "lb": (3.4, 3.6, "Load balancer /\nKubernetes Service"),
    "web": (6.5, 3.6, "Web servers (gunicorn main:app)\nFlask app: /review /classify /predict\n/v2 (KServe) /jobs /metrics /docs\nmodels loaded per worker (ONNX Runtime,\nscikit-learn), hashes verified"),
    "store": (6.5, 0.6, "Job store + feedback\nSQLite (one machine) or\nPostgreSQL (many servers)\nleases, retries, retention"),
    "workers": (10.4, 0.6, "Pull workers anywhere\npython -m app.worker\n/ any HTTP client\n(laptop, GPU box behind NAT)"),
    "models": (10.4, 3.6, "saved_models/<name>/<version>/\nmanifest.json + artifacts\n(sha256, metrics, plots)"),
}
ARROWS = [("clients", "lb", "HTTP"), ("lb", "web", ""), ("web", "store", "SQL"), ("workers", "web", "lease / heartbeat /\nresult over HTTP"),
          ("models", "web", "load + verify")]


def main() -> None:
    """Render the diagram."""
    fig, ax = plt.subplots(figsize=(14, 6))
    ax.set_xlim(0, 14)
    ax.set_ylim(0, 6)
    ax.axis("off")
    centers = {}
    for key, (x, y, text) in BOXES.items():
        w, h = (3.2 if key in ("web", "workers", "models", "store") else 2.6), 1.9
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc="#e8f0fb", ec="#0b3d6e", lw=1.5))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9)
        centers[key] = (x + w / 2, y + h / 2, w, h)
    for a, b, label in ARROWS:
        (xa, ya, wa, ha), (xb, yb, wb, hb) = centers[a], centers[b]
        if abs(ya - yb) < 0.1:
            start, end = (xa + wa / 2 * (1 if xb > xa else -1), ya), (xb - wb / 2 * (1 if xb > xa else -1), yb)
        else:
            start, end = (xa, ya + ha / 2 * (1 if yb > ya else -1)), (xb, yb - hb / 2 * (1 if yb > ya else -1))
            if abs(xa - xb) > 0.1:
                start, end = (xa - wa / 2, ya + 0.3), (xb + wb / 2 - 0.2, yb - hb / 2)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=15, color="#0b3d6e", lw=1.5))
        if label:
            ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.15, label, ha="center", fontsize=8, color="#333")
    ax.set_title("modelserve architecture", fontsize=13)
    fig.tight_layout()
    fig.savefig(Path(__file__).with_name("architecture.png"), dpi=90)


if __name__ == "__main__":
    main()
