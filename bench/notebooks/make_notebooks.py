"""Write the benchmark notebooks of bench_planner.py (run it after editing a cell).

    .venv/bin/python bench/notebooks/make_notebooks.py

Each notebook is shaped like ordinary data-science work on synthetic data made
in the notebook with seeded generators, so every rerun gives the same values.
Nothing reaches the network; only load_clean writes a file (a CSV in the
kernel's working directory, in its first data cell, so that cell is unsafe to
rerun, as in real work). The cells are kept `ruff format`-clean.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

NOTEBOOKS: dict[str, list[str]] = {}

NOTEBOOKS["load_clean"] = [
    """# Orders: generate a raw CSV export, read it back, clean it, derive a large frame.
import numpy as np
import pandas as pd

SEED = 1101
N_ROWS = 1_000_000""",
    """# The "raw export" of a shop system: mixed-case labels with stray spaces,
# missing amounts, "?" quantities and duplicated rows. Written once to the cwd.
rng = np.random.default_rng(SEED)
regions = np.array(["North", "north ", "SOUTH", "South", "east", "West", " west"])
products = np.array([f"P{i:04d}" for i in range(400)])
amount = np.round(rng.gamma(2.0, 30.0, N_ROWS), 2)
amount[rng.random(N_ROWS) < 0.01] = np.nan
qty = rng.integers(1, 20, N_ROWS).astype(str).astype(object)
qty[rng.random(N_ROWS) < 0.005] = "?"
seconds = rng.integers(0, 365 * 24 * 3600, N_ROWS)
export = pd.DataFrame(
    {
        "order_id": rng.integers(10**8, 10**9, N_ROWS),
        "ts": pd.Timestamp("2024-01-01") + pd.to_timedelta(seconds, unit="s"),
        "customer": rng.integers(0, 50_000, N_ROWS),
        "region": rng.choice(regions, N_ROWS),
        "product": rng.choice(products, N_ROWS),
        "amount": amount,
        "qty": qty,
    }
)
export = pd.concat([export, export.sample(frac=0.02, random_state=SEED)])
export.to_csv("orders.csv", index=False)
del export, amount, qty, seconds""",
    """raw = pd.read_csv("orders.csv")
raw.shape""",
    """# Clean: drop duplicates and rows without an amount, fix types, normalise labels.
clean = raw.drop_duplicates()
clean = clean.dropna(subset=["amount"])
clean = clean[clean["qty"] != "?"].copy()
clean["qty"] = clean["qty"].astype("int64")
clean["ts"] = pd.to_datetime(clean["ts"], format="%Y-%m-%d %H:%M:%S")
clean["region"] = clean["region"].str.strip().str.lower().astype("category")
clean["product"] = clean["product"].astype("category")
clean = clean.sort_values("ts").reset_index(drop=True)
dropped = len(raw) - len(clean)""",
    """# Derived columns, in place, as one does.
clean["revenue"] = clean["amount"] * clean["qty"]
clean["month"] = clean["ts"].dt.month
clean["weekday"] = clean["ts"].dt.day_name()
clean["hour"] = clean["ts"].dt.hour""",
    """# Per-customer statistics joined back onto every order: the large cleaned frame.
customers = clean.groupby("customer").agg(
    n_orders=("order_id", "size"), spend=("revenue", "sum"), first=("ts", "min")
)
orders = clean.merge(customers, left_on="customer", right_index=True, how="left")
orders["share_of_spend"] = orders["revenue"] / orders["spend"]
orders["days_since_first"] = (orders["ts"] - orders["first"]).dt.days
orders["big_order"] = orders["revenue"] > orders["revenue"].quantile(0.95)""",
    """# Small summaries for the report.
by_region = orders.groupby("region", observed=True)["revenue"].agg(["count", "sum", "mean"])
monthly = orders.groupby("month")["revenue"].sum()
top_customers = customers.nlargest(20, "spend")
repeat_rate = float((customers["n_orders"] > 1).mean())
by_region""",
]

NOTEBOOKS["features"] = [
    """# Sensor log feature engineering: large derived frames, cheap to recompute.
import numpy as np
import pandas as pd

SEED = 2202
N = 1_000_000
rng = np.random.default_rng(SEED)""",
    """# One row per second, five noisy channels.
t = np.arange(N)
sensors = pd.DataFrame(
    {
        "temp": 20 + 5 * np.sin(2 * np.pi * t / 86_400) + rng.normal(0, 0.5, N),
        "pressure": 1013 + np.cumsum(rng.normal(0, 0.01, N)),
        "vibration": np.abs(rng.standard_normal(N)),
        "current": 10 + rng.gamma(2.0, 1.0, N),
        "flow": 50 + 3 * np.cos(2 * np.pi * t / 3_600) + rng.normal(0, 1, N),
    },
    index=pd.date_range("2024-03-01", periods=N, freq="s"),
)""",
    """# Rolling statistics over three windows.
windows = [60, 600, 3600]
rolling_mean = pd.concat({w: sensors.rolling(w).mean() for w in windows}, axis=1)
rolling_std = pd.concat({w: sensors.rolling(w).std() for w in windows}, axis=1)""",
    """# Calendar one-hots and differences, stacked into one design matrix.
calendar = np.zeros((N, 24 + 7), dtype=np.float32)
calendar[t, sensors.index.hour.to_numpy()] = 1
calendar[t, 24 + sensors.index.dayofweek.to_numpy()] = 1
diffs = np.diff(sensors.to_numpy(), axis=0, prepend=np.nan)
design = np.hstack([sensors.to_numpy(), rolling_mean.to_numpy(), diffs, calendar])""",
    """zscores = (sensors - sensors.mean()) / sensors.std()
anomalies = zscores[(zscores.abs() > 3.5).any(axis=1)]""",
    """# Small summaries kept for the report.
summary = sensors.describe()
hourly = sensors.groupby(sensors.index.hour).mean()
corr = pd.DataFrame(design[4000:, :20]).corr()
anomaly_rate = len(anomalies) / N
summary""",
]

NOTEBOOKS["model_fit"] = [
    """# Fit and compare classifiers on a synthetic tabular problem (compute-heavy).
import numpy as np
from sklearn import metrics
from sklearn.cluster import KMeans
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

SEED = 3303""",
    """X, y = make_classification(
    n_samples=30_000,
    n_features=40,
    n_informative=12,
    n_redundant=8,
    n_classes=3,
    class_sep=0.8,
    random_state=SEED,
)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.25, random_state=SEED, stratify=y
)""",
    """forest = RandomForestClassifier(n_estimators=200, max_depth=10, random_state=SEED, n_jobs=1)
forest.fit(X_train, y_train)""",
    """logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=0.5))
logreg.fit(X_train, y_train)
cv_scores = cross_val_score(
    make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)), X_train, y_train, cv=5
)""",
    """kmeans = KMeans(n_clusters=12, n_init=4, random_state=SEED).fit(X)
segments = np.bincount(kmeans.labels_)""",
    """forest_pred = forest.predict(X_test)
results = {
    "forest_accuracy": metrics.accuracy_score(y_test, forest_pred),
    "forest_f1": metrics.f1_score(y_test, forest_pred, average="macro"),
    "logreg_accuracy": metrics.accuracy_score(y_test, logreg.predict(X_test)),
    "cv_mean": float(cv_scores.mean()),
    "kmeans_inertia": float(kmeans.inertia_),
    "confusion": metrics.confusion_matrix(y_test, forest_pred).tolist(),
}
top_features = np.argsort(forest.feature_importances_)[::-1][:10]
results""",
]

NOTEBOOKS["simulation"] = [
    """# An agent-based epidemic and a queue, simulated step by step (compute-heavy).
import random

import numpy as np

SEED = 4404
rng = np.random.default_rng(SEED)
random.seed(SEED)""",
    """# A 5000 x 5000 landscape: distance to the city centre and a contact-risk field.
# Large (400 MB), cheap to recompute.
xs = np.linspace(0.0, 100.0, 5000)
dist = np.hypot(xs[:, None] - 50.0, xs[None, :] - 50.0)
risk_field = np.exp(-dist / 25.0)""",
    """# SIR epidemic over a million agents, one Python loop step per day.
n_agents = 1_000_000
beta, gamma = 0.35, 0.1
home = rng.integers(0, 5000, (n_agents, 2))
risk = risk_field[home[:, 0], home[:, 1]]
state = np.zeros(n_agents, dtype=np.int8)
state[rng.choice(n_agents, 50, replace=False)] = 1
curve = []
for day in range(365):
    infected = state == 1
    force = beta * infected.sum() / n_agents
    p_infect = 1.0 - np.exp(-force * risk * 2.0)
    new = (state == 0) & (rng.random(n_agents) < p_infect)
    recovered = infected & (rng.random(n_agents) < gamma)
    state[new] = 1
    state[recovered] = 2
    curve.append((day, int((state == 0).sum()), int(infected.sum()), int((state == 2).sum())))
epi_curve = np.array(curve)
peak_day = int(epi_curve[:, 2].argmax())""",
    """# An M/M/3 queue, one customer at a time, in plain Python.
def simulate_queue(n_customers, arrival_rate, service_rate, servers=3):
    free_at = [0.0] * servers
    clock, waits = 0.0, []
    for _ in range(n_customers):
        clock += random.expovariate(arrival_rate)
        server = min(range(servers), key=free_at.__getitem__)
        start = max(clock, free_at[server])
        waits.append(start - clock)
        free_at[server] = start + random.expovariate(service_rate)
    return waits


waits = np.array(simulate_queue(3_000_000, 2.7, 1.0))
queue_stats = {
    "mean_wait": float(waits.mean()),
    "p95_wait": float(np.percentile(waits, 95)),
    "share_waiting": float((waits > 0).mean()),
}""",
    """# Small results for the report.
final_sizes = np.bincount(state, minlength=3)
attack_rate = final_sizes[2] / n_agents
summary = {"peak_day": peak_day, "attack_rate": float(attack_rate), **queue_stats}
summary""",
]

NOTEBOOKS["plotting"] = [
    """# Plots of derived market data; the figures and axes stay in variables.
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

SEED = 5505
rng = np.random.default_rng(SEED)""",
    """days = pd.date_range("2020-01-01", periods=1500, freq="D")
steps = rng.normal(0.0003, 0.01, (len(days), 6))
prices = pd.DataFrame(
    100 * np.exp(np.cumsum(steps, axis=0)), index=days, columns=[f"asset_{i}" for i in range(6)]
)
returns = prices.pct_change().dropna()
smooth = prices.rolling(30).mean()""",
    """fig_prices, ax_prices = plt.subplots(figsize=(10, 5))
for col in prices:
    ax_prices.plot(prices.index, prices[col], lw=0.8, label=col)
ax_prices.plot(smooth.index, smooth.mean(axis=1), color="k", lw=2, label="30-day mean")
ax_prices.legend(ncol=4)
ax_prices.set_title("Prices")""",
    """fig_grid, axes = plt.subplots(2, 2, figsize=(10, 8))
axes[0, 0].hist(returns.to_numpy().ravel(), bins=100)
axes[0, 1].scatter(returns["asset_0"], returns["asset_1"], s=2, alpha=0.3)
im = axes[1, 0].imshow(returns.corr(), cmap="viridis")
fig_grid.colorbar(im, ax=axes[1, 0])
axes[1, 1].bar(prices.columns, returns.std() * np.sqrt(252))
fig_grid.tight_layout()""",
    """# A dense 2-D histogram of a large correlated sample.
sample = rng.multivariate_normal([0, 0], [[1, 0.6], [0.6, 1]], size=6_000_000)
heat, xedges, yedges = np.histogram2d(sample[:, 0], sample[:, 1], bins=400)
fig_heat, ax_heat = plt.subplots(figsize=(6, 6))
mesh = ax_heat.pcolormesh(xedges, yedges, heat.T, cmap="magma")""",
    """def render(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


figures = {"prices": fig_prices, "grid": fig_grid, "heat": fig_heat}
pngs = {name: render(fig) for name, fig in figures.items()}
{name: len(png) for name, png in pngs.items()}""",
]

NOTEBOOKS["text_pipeline"] = [
    """# Tokenize synthetic documents, count terms, build TF-IDF features.
import re
from collections import Counter

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

SEED = 6606
rng = np.random.default_rng(SEED)""",
    """# Made-up words from syllables; documents draw them with Zipf frequencies.
syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "ber", "don"]
words = sorted({"".join(rng.choice(syllables, rng.integers(1, 5))) for _ in range(30_000)})
weights = 1.0 / np.arange(1, len(words) + 1) ** 1.1
weights /= weights.sum()
shuffled = [words[i] for i in rng.permutation(len(words))]
lengths = rng.integers(40, 200, 25_000)
picks = rng.choice(len(words), size=int(lengths.sum()), p=weights)
docs = []
start = 0
for n in lengths:
    text = " ".join([shuffled[i] for i in picks[start : start + n]])
    docs.append(text.capitalize() + ".")
    start += n""",
    """token_re = re.compile(r"[a-z]+")
tokens = [token_re.findall(doc.lower()) for doc in docs]
n_tokens = sum(map(len, tokens))""",
    """counts = Counter(tok for doc in tokens for tok in doc)
doc_freq = Counter(tok for doc in tokens for tok in set(doc))
vocab = {w: i for i, (w, _) in enumerate(counts.most_common())}
stop_words = {w for w, _ in counts.most_common(25)}""",
    """tfidf = TfidfVectorizer(min_df=2, stop_words=sorted(stop_words), dtype=np.float32)
X = tfidf.fit_transform(docs)
svd = TruncatedSVD(n_components=50, random_state=SEED)
topics = svd.fit_transform(X)""",
    """terms = tfidf.get_feature_names_out()
top_terms = [
    [terms[i] for i in np.argsort(component)[::-1][:8]] for component in svd.components_[:10]
]
stats = {"docs": len(docs), "tokens": n_tokens, "vocabulary": len(vocab), "nnz": int(X.nnz)}
stats""",
]


def notebook(cells: list[str]) -> dict:
    return {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": f"c{i}",
                "metadata": {},
                "outputs": [],
                "source": src.splitlines(keepends=True),
            }
            for i, src in enumerate(cells)
        ],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        path = HERE / f"{name}.ipynb"
        path.write_text(json.dumps(notebook(cells), indent=1) + "\n")
        print(f"wrote {path} ({len(cells)} cells)")


if __name__ == "__main__":
    main()
