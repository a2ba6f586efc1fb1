"""Cohorts: k-means (k chosen by silhouette) for assignment, DBSCAN for discovering dense groups
of any shape, and readable names generated from each centroid's most distinctive traits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import DBSCAN, KMeans
from sklearn.metrics import silhouette_score
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from conf.settings import Models
from udfs.model_features import COHORT_FEATURES

NOISE = -1
SILHOUETTE_SAMPLE = 5_000
# Trait -> (adjective, noun) when a centroid is high on it; a few also read when it is low.
HIGH = {
    "from_browse": ("Casual", "browsers"),
    "from_search": ("Search-led", "researchers"),
    "from_view": ("Catalogue", "browsers"),
    "from_cart": ("Cart-heavy", "shoppers"),
    "from_uncart": ("Indecisive", "shoppers"),
    "from_wishlist": ("Wishlisting", "planners"),
    "from_coupon": ("Price-sensitive", "deal hunters"),
    "from_checkout": ("Checkout-bound", "shoppers"),
    "from_purchase": ("Frequent", "buyers"),
    "from_email": ("Email-driven", "visitors"),
    "from_offer": ("Offer-responsive", "shoppers"),
    "view_to_cart": ("Impulsive", "buyers"),
    "cart_to_checkout": ("Decisive", "shoppers"),
    "checkout_to_purchase": ("Converting", "buyers"),
    "browse_to_exit": ("Bouncing", "visitors"),
    "view_to_exit": ("Fleeting", "visitors"),
}
LOW = {
    "checkout_to_purchase": ("Hesitant", "cart abandoners"),
    "view_to_exit": ("High-engagement", "browsers"),
}


@dataclass
class Cohorts:
    kmeans: Pipeline  # scaler + k-means: label and distances to every centroid
    silhouette: dict[int, float]  # k -> silhouette score, for the report
    dbscan_neighbors: Pipeline  # scaler + nearest core sample: DBSCAN cohort within eps
    dbscan_labels: list[int]  # cohort of each core sample, in the neighbour index's order
    dbscan_eps: float
    profiles: list[dict]  # per k-means cohort: id, name, size, traits

    @property
    def k(self) -> int:
        return len(self.profiles)


def fit(X: np.ndarray, m: Models, progress=print) -> Cohorts:
    """X: one row per user, columns COHORT_FEATURES."""
    scores, fitted = {}, {}
    for k in range(m.k_min, m.k_max + 1):
        model = make_pipeline(StandardScaler(), KMeans(k, n_init=10, random_state=0))
        labels = model.fit_predict(X)
        scaled = model[0].transform(X)
        # On a sample beyond a few thousand users: the score is quadratic in the rows.
        size = min(len(X), SILHOUETTE_SAMPLE)
        scores[k] = float(silhouette_score(scaled, labels, sample_size=size, random_state=0))
        fitted[k] = model
        progress(f"[train] k-means k={k}: silhouette {scores[k]:.3f}")
    best = max(scores, key=lambda k: (scores[k], -k))
    kmeans = fitted[best]
    scaler = kmeans[0]
    scaled = scaler.transform(X)
    dbscan = DBSCAN(eps=m.dbscan_eps, min_samples=m.dbscan_min_samples).fit(scaled)
    core = dbscan.core_sample_indices_
    neighbors = Pipeline(
        [("scale", scaler), ("nearest", NearestNeighbors(n_neighbors=1, radius=None))]
    )
    neighbors[1].fit(scaled[core] if len(core) else scaled[:1])
    found = len(set(dbscan.labels_) - {NOISE})
    noise = int((dbscan.labels_ == NOISE).sum())
    progress(f"[train] DBSCAN eps={m.dbscan_eps}: {found} dense cohorts, {noise} users as noise")
    labels = kmeans[1].labels_
    profiles = describe(kmeans[1].cluster_centers_, labels)
    return Cohorts(
        kmeans,
        scores,
        neighbors,
        [int(x) for x in dbscan.labels_[core]] if len(core) else [NOISE],
        m.dbscan_eps,
        profiles,
    )


def describe(centers: np.ndarray, labels: np.ndarray) -> list[dict]:
    """Names from the traits that set each centroid apart most (scaled units: the centroid's
    distance from the others' mean, over their spread)."""
    profiles, used = [], set()
    for cohort, center in enumerate(centers):
        others = np.delete(centers, cohort, axis=0)
        spread = others.std(axis=0) + 1e-9
        z = (center - others.mean(axis=0)) / spread
        order = np.argsort(-np.abs(z))
        traits = []
        for i in order:
            name = COHORT_FEATURES[i]
            table = HIGH if z[i] > 0 else LOW
            if name in table:
                traits.append((name, float(z[i]), *table[name]))
            if len(traits) == 2:
                break
        if not traits:
            traits = [(COHORT_FEATURES[order[0]], float(z[order[0]]), "Mixed", "users")]
        adjective, noun = traits[0][2], (traits[1][3] if len(traits) > 1 else traits[0][3])
        if noun.lower() in adjective.lower() or adjective.split("-")[0].lower() in noun:
            noun = traits[0][3]
        name = f"{adjective} {noun}"
        while name in used:
            name += "+"
        used.add(name)
        profiles.append(
            {
                "cohort": cohort,
                "name": name,
                "size": int((labels == cohort).sum()),
                "traits": {t[0]: round(t[1], 2) for t in traits},
            }
        )
    return profiles
