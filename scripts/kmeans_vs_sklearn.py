#!/usr/bin/env python3
"""Compares persona's k-means segments with scikit-learn's KMeans on the same
vectors.

Replay a log with `[segments.kmeans]` and `--changelog`, then run this on the
output folder. It rebuilds every profile as of the last refit from
`profiles.changes.jsonl`, forms the vectors exactly as docs/models.md defines
them (recency, frequency, spend by default, log-scaled and standardised),
fits `sklearn.cluster.KMeans` (k-means++, n_init=10) to them, and prints
persona's inertia, scikit-learn's, their ratio and the adjusted Rand index
between the two partitions.

    persona replay --input LOG --format online-retail --config kmeans.toml \
        --out OUT --changelog
    python3 scripts/kmeans_vs_sklearn.py OUT

Needs numpy and scikit-learn (`pip install scikit-learn`).
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

DAY_MS = 86_400_000


def changes(path):
    with open(path) as lines:
        for line in lines:
            yield json.loads(line)


def feature(profile, name, log_scale):
    log = (lambda x: math.log1p(max(x, 0.0))) if log_scale else (lambda x: x)
    counts = profile["counts"]
    if name == "recency":
        return -(profile["last_seen"] or 0) / DAY_MS
    if name == "frequency":
        return log(counts.get("purchase", 0) - counts.get("cancellation", 0))
    if name == "spend":
        return log(profile["spend"] / 100)
    if name == "events":
        return log(sum(counts.values()))
    if name in ("distinct_items", "distinct_categories"):
        return log(profile[name])
    if name == "avg_rating":
        return profile["avg_rating"] or 0.0
    if name == "top_affinity":
        top = profile["top_categories"]
        return top[0]["affinity"] if top else 0.0
    raise ValueError(f"unknown feature {name}")


def main():
    out = Path(sys.argv[1])
    log_scale = "--no-log" not in sys.argv

    # The last refit's model: its records carry the greatest time.
    models = [c for c in changes(out / "segments.changes.jsonl") if c["diff"] == 1]
    refit = max(c["time"] for c in models)
    clusters = sorted((c for c in models if c["time"] == refit), key=lambda c: c["cluster"])
    features = list(clusters[0]["mean"])
    k = len(clusters)

    # Every profile as of the refit.
    profiles = {}
    ordered = sorted(changes(out / "profiles.changes.jsonl"), key=lambda c: (c["time"], c["diff"]))
    for change in ordered:
        if change["time"] > refit:
            break
        user = change["user"]
        if change["diff"] < 0:
            profiles.pop(user, None)
        else:
            profiles[user] = change
    users = sorted(u for u, p in profiles.items() if p["last_seen"] is not None)
    raw = np.array([[feature(profiles[u], f, log_scale) for f in features] for u in users])
    mean, scale = raw.mean(axis=0), raw.std(axis=0)
    scale[scale == 0] = 1.0
    points = (raw - mean) / scale
    persona_labels = np.array([profiles[u]["cluster"]["id"] for u in users])

    persona_mean = np.array([clusters[0]["mean"][f] for f in features])
    persona_inertia = clusters[0]["inertia"]
    centroids = np.array([[c["centroid"][f] for f in features] for c in clusters])
    recomputed = sum(
        float(np.sum((points[persona_labels == c] - centroids[c]) ** 2)) for c in range(k)
    )

    sklearn = KMeans(n_clusters=k, init="k-means++", n_init=10, random_state=0).fit(points)
    ari = adjusted_rand_score(sklearn.labels_, persona_labels)
    print(f"refit at {refit} ms, {len(users)} users, k = {k}, features {features}")
    print(f"standardising means agree within {np.max(np.abs(mean - persona_mean)):.2e}")
    print("| | inertia |")
    print("|---|---|")
    print(f"| persona (segments.jsonl) | {persona_inertia:.2f} |")
    print(f"| persona (recomputed from the profiles' clusters) | {recomputed:.2f} |")
    print(f"| scikit-learn KMeans (k-means++, n_init=10) | {sklearn.inertia_:.2f} |")
    print(f"| persona ÷ scikit-learn | {persona_inertia / sklearn.inertia_:.4f} |")
    print(f"adjusted Rand index, persona vs scikit-learn: {ari:.4f}")


if __name__ == "__main__":
    main()
