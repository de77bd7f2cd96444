"""Reference values for dtl-select's validators from scikit-learn and SKADA.

    python -m venv venv && venv/bin/pip install skada==0.6.0 scikit-learn numpy scipy
    venv/bin/python scripts/make_select_fixture.py > crates/dtl-select/tests/fixtures/select_reference.json

- `ami`: sklearn.metrics.adjusted_mutual_info_score (arithmetic normaliser) on labelings;
- `entropy`: skada.metrics.PredictionEntropyScorer on fixed probabilities (SKADA averages the
  entropy terms over samples *and* classes, so its value is dtl's mean entropy divided by K;
  greater_is_better=False negates it);
- `dev`: skada.metrics.DeepEmbeddedValidation's control-variate risk, on fixed losses and
  domain-classifier probabilities (a pipeline whose transform is the identity, so the
  validation split and the weights are known).
"""
import json

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import adjusted_mutual_info_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import FunctionTransformer
from skada import make_da_pipeline
from skada.metrics import DeepEmbeddedValidation, PredictionEntropyScorer

rng = np.random.default_rng(0)
out = {"ami": [], "entropy": [], "dev": []}

for n, ka, kb in [(12, 2, 3), (40, 4, 4), (200, 10, 10), (30, 3, 1)]:
    a = rng.integers(0, ka, n)
    b = rng.integers(0, kb, n) if kb > 1 else np.zeros(n, dtype=int)
    # half of the second labeling copies the first, so the AMI is far from 0
    b[: n // 2] = a[: n // 2] % max(kb, 1)
    out["ami"].append({"a": a.tolist(), "b": b.tolist(), "ami": float(adjusted_mutual_info_score(a, b))})


class Fixed(BaseEstimator, ClassifierMixin):
    """predict_proba returns the stored row of each sample (X holds its index)."""

    def __init__(self, probs=None):
        self.probs = probs

    def fit(self, X, y=None, **kw):
        self.classes_ = np.arange(self.probs.shape[1])
        return self

    def predict_proba(self, X, **kw):
        return self.probs[np.asarray(X)[:, 0].astype(int)]

    def predict(self, X, **kw):
        return self.predict_proba(X).argmax(1)


for n, k in [(5, 3), (50, 10)]:
    p = rng.dirichlet(np.ones(k) * 0.5, n)
    X = np.arange(n, dtype=float)[:, None]
    est = Fixed(p).fit(X)
    score = PredictionEntropyScorer()(est, X, np.zeros(n, dtype=int), sample_domain=-np.ones(n, dtype=int))
    out["entropy"].append({"probs": p.tolist(), "skada": float(score)})


class FixedDomain(BaseEstimator, ClassifierMixin):
    """A domain classifier whose P(source), P(target) for sample i are stored."""

    def __init__(self, table=None):
        self.table = table

    def fit(self, X, y=None, **kw):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        return self.table[np.asarray(X)[:, 0].astype(int)]


n_src, n_tgt = 30, 20
n = n_src + n_tgt
losses = rng.gamma(2.0, 0.5, n_src)
p_source = rng.uniform(0.2, 0.8, n)
table = np.stack([p_source, 1 - p_source], axis=1)
X = np.arange(n, dtype=float)[:, None]
y = np.concatenate([np.arange(n_src), np.zeros(n_tgt, dtype=int)])
domain = np.concatenate([np.ones(n_src, dtype=int), -np.ones(n_tgt, dtype=int)])
probs = np.eye(n_src)[np.concatenate([np.arange(n_src), np.zeros(n_tgt, dtype=int)])]
pipe = make_da_pipeline(FunctionTransformer(lambda x: x), Fixed(probs)).fit(X, y, sample_domain=domain)


def loss_func(y_true, y_pred):
    return losses[np.asarray(y_true)][:, None]


dev = DeepEmbeddedValidation(domain_classifier=FixedDomain(table), loss_func=loss_func, random_state=0)
value = dev(pipe, X, y, sample_domain=domain)
# The split and the weights DEV used, to feed dtl the same losses and weights.
_, X_val, _, y_val = train_test_split(X[:n_src], y[:n_src], test_size=0.33, random_state=np.random.RandomState(0))
n_train = n_src - len(X_val)
idx = X_val[:, 0].astype(int)
w = (n_train / n_tgt) * table[idx, 0] / table[idx, 1]
out["dev"].append({"losses": losses[idx].tolist(), "weights": w.tolist(), "skada": float(value)})
print(json.dumps(out, indent=1))
