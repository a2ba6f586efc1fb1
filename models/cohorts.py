"""Cohorts: k-means (k chosen by silhouette) for assignment, DBSCAN or OPTICS
(`models.dense_algorithm`) for discovering dense groups of any shape, and readable names generated
from each centroid's most distinctive traits.

A dense cohort is served as a nearest-neighbour lookup: a user belongs to the cohort of the
nearest reference sample if they are within its radius, else to none (noise). For DBSCAN the
references are the core samples and the radius is eps; for OPTICS, whose clusters have no single
density, they are the clustered samples and each one's radius is its own core distance (the
distance to its min_samples-th neighbour), so a new user joins a cluster only where they are as
close as its members are to each other."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import DBSCAN, OPTICS, KMeans
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
    dense_algorithm: str  # "dbscan" or "optics"
    dense_neighbors: Pipeline  # scaler + nearest reference sample
    dense_labels: list[int]  # dense cohort of each reference sample, in the index's order
    dense_radii: list[float]  # how near a user must be to a reference sample to join its cohort
    profiles: list[dict]  # per k-means cohort: id, name, size, traits

    @property
    def k(self) -> int:
        return len(self.profiles)

    def dense_cohorts(self, X: np.ndarray) -> np.ndarray:
        """The dense cohort of each row as the scoring step serves it (NOISE if none)."""
        distance, index = self.dense_neighbors[1].kneighbors(self.dense_neighbors[0].transform(X))
        labels = np.asarray(self.dense_labels)[index[:, 0]]
        within = distance[:, 0] <= np.asarray(self.dense_radii)[index[:, 0]]
        return np.where(within, labels, NOISE)


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
    all_labels, references, radii = dense_fit(scaled, m)
    neighbors = Pipeline(
        [("scale", scaler), ("nearest", NearestNeighbors(n_neighbors=1, radius=None))]
    )
    neighbors[1].fit(scaled[references] if len(references) else scaled[:1])
    found = len(set(all_labels) - {NOISE})
    noise = int((all_labels == NOISE).sum())
    progress(f"[train] {m.dense_algorithm}: {found} dense cohorts, {noise} users as noise")
    labels = kmeans[1].labels_
    profiles = describe(kmeans[1].cluster_centers_, labels)
    if not len(references):  # everyone is noise: one reference nobody is near
        return Cohorts(kmeans, scores, m.dense_algorithm, neighbors, [NOISE], [0.0], profiles)
    return Cohorts(
        kmeans,
        scores,
        m.dense_algorithm,
        neighbors,
        [int(x) for x in all_labels[references]],
        [float(r) for r in radii],
        profiles,
    )


def dense_fit(scaled: np.ndarray, m: Models) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every row's dense cohort (NOISE for none), the rows kept as references for serving, and
    each reference's radius."""
    if m.dense_algorithm == "optics":
        optics = OPTICS(min_samples=m.dense_min_samples, xi=m.optics_xi).fit(scaled)
        references = np.flatnonzero(optics.labels_ != NOISE)
        return optics.labels_, references, optics.core_distances_[references]
    dbscan = DBSCAN(eps=m.dbscan_eps, min_samples=m.dense_min_samples).fit(scaled)
    references = dbscan.core_sample_indices_
    return dbscan.labels_, references, np.full(len(references), m.dbscan_eps)


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
