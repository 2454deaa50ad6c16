import pytest

from tfrec_attn.baselines import run_baselines


def test_reference_figures_on_ml100k(ml100k_split):
    """The foundation's reference figures (test split, full ranking)."""
    results = run_baselines(ml100k_split, "test")
    assert results["MostPop"]["HR@10"] == pytest.approx(0.0848, abs=0.002)
    assert results["MostPop"]["NDCG@10"] == pytest.approx(0.0441, abs=0.002)
    assert results["ALS"]["HR@10"] == pytest.approx(0.1379, abs=0.01)
    assert results["ALS"]["NDCG@10"] == pytest.approx(0.0719, abs=0.01)
    assert results["ALS"]["users"] == 943
