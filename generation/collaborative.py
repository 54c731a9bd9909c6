"""Collaborative filtering on real interactions: PureSVD (Cremonesi et al., 2010).

A truncated SVD of the user-item matrix gives item factors Q; a user's affinity for items is their
interaction row projected through Q Q^T. Strong for top-N ranking, deterministic, seconds to fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.decomposition import TruncatedSVD


@dataclass
class CollaborativeModel:
    user_index: dict[str, int]
    item_index: dict[str, int]
    matrix: sparse.csr_matrix  # users x items, implicit feedback
    item_factors: np.ndarray  # items x k

    @classmethod
    def fit(cls, interactions: pd.DataFrame, factors: int = 64, seed: int = 0) -> CollaborativeModel:
        users = {u: i for i, u in enumerate(interactions["user_id"].astype(str).unique())}
        items = {m: i for i, m in enumerate(interactions["item_id"].astype(str).unique())}
        rows = interactions["user_id"].astype(str).map(users).to_numpy()
        cols = interactions["item_id"].astype(str).map(items).to_numpy()
        matrix = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                                   shape=(len(users), len(items)))
        matrix.data[:] = 1.0  # repeated interactions count once
        k = max(1, min(factors, min(matrix.shape) - 1))
        svd = TruncatedSVD(n_components=k, random_state=seed).fit(matrix)
        return cls(users, items, matrix, svd.components_.T.astype(np.float32))

    def scores(self, user_id: str, item_ids: list[str]) -> np.ndarray:
        """Affinity of the user for each item; unknown users or items score 0."""
        row = self.user_index.get(str(user_id))
        if row is None:
            return np.zeros(len(item_ids), dtype=np.float32)
        user_vector = np.asarray(self.matrix[row] @ self.item_factors).ravel()
        cols = np.array([self.item_index.get(str(i), -1) for i in item_ids])
        out = np.zeros(len(item_ids), dtype=np.float32)
        known = cols >= 0
        out[known] = self.item_factors[cols[known]] @ user_vector
        return out
