"""Lexical features shared by the trained judges (scikit-learn transformers of lists of responses)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from safedose.judges._strmatch import strmatch_label


def tfidf(**options: Any) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(sublinear_tf=True, min_df=2, **options)


def lexical_features() -> Any:
    """TF-IDF word 1-2-grams and character 2-5-grams of a text (lowercased), side by side."""
    from sklearn.pipeline import FeatureUnion

    return FeatureUnion(
        [("words", tfidf(ngram_range=(1, 2))), ("chars", tfidf(analyzer="char_wb", ngram_range=(2, 5)))]
    )


def opening(texts: Sequence[str]) -> list[str]:
    return [str(t).strip()[:150].lower() for t in texts]


def body(texts: Sequence[str]) -> list[str]:
    return [str(t).strip().lower() for t in texts]


def strmatch_column(texts: Sequence[str]) -> Any:
    import scipy.sparse as sp

    return sp.csr_matrix([[1.0 if strmatch_label(str(t)) == "refusal" else 0.0] for t in texts])


def refusal_features() -> Any:
    """Word 1-3-grams and character 2-5-grams of the first 150 characters, word 1-2-grams of the whole response, and
    XSTest's string-match verdict."""
    from sklearn.pipeline import FeatureUnion, make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    return FeatureUnion([
        ("opening_words", make_pipeline(FunctionTransformer(opening), tfidf(ngram_range=(1, 3)))),
        ("opening_chars", make_pipeline(FunctionTransformer(opening), tfidf(analyzer="char_wb", ngram_range=(2, 5)))),
        ("body_words", make_pipeline(FunctionTransformer(body), tfidf(ngram_range=(1, 2)))),
        ("strmatch", FunctionTransformer(strmatch_column)),
    ])  # fmt: skip


def fitted_once(make: Callable[[], Any], texts: Sequence[str]) -> Callable[[np.ndarray], tuple[Any, Any]]:
    """`features(rows)`: a fresh `make()` fitted on `texts[rows]` and the transformed matrix of those rows, computed
    once per distinct set of rows (cross-validation tries several hyperparameters on the same folds)."""
    done: dict[bytes, tuple[Any, Any]] = {}

    def features(rows: np.ndarray) -> tuple[Any, Any]:
        key = np.asarray(rows, dtype=np.int64).tobytes()
        if key not in done:
            chosen = [texts[i] for i in rows]
            vectoriser = make()
            done[key] = (vectoriser, vectoriser.fit_transform(chosen))  # one pass of the analyser, not two
        return done[key]

    return features
