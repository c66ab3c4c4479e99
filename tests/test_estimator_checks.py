"""scikit-learn's estimator checks on KroneckerGP with its defaults."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from kronecker_gp import KroneckerGP, MultiTaskGP


def _expected_failures(estimator):
    # Every entry needs a written reason; the dict is expected to stay empty.
    return {}


# MultiTaskGP's checks pass with its default optimiser too, but take ~2 minutes.
@parametrize_with_checks(
    [KroneckerGP(), MultiTaskGP(optimizer=None)],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
