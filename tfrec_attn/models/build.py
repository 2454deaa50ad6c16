"""The retrieval model a run config describes: one query vector per user
(:class:`~tfrec_attn.models.retrieval.SequentialRetrievalModel`) or several interests
(:class:`~tfrec_attn.models.multi_interest.MultiInterestRetrievalModel`)."""

from __future__ import annotations

from tfrec_attn.models.multi_interest import MultiInterestRetrievalModel
from tfrec_attn.models.retrieval import SequentialRetrievalModel


def build_retrieval_model(model_config, loss_config, num_indices: int, *, item_counts=None,
                          seed: int = 0, static_shapes: bool = False, text_features=None) -> SequentialRetrievalModel:
    """The retrieval model described by the run config's ``model`` and ``loss`` sections,
    with all weights created (call inside ``strategy.scope()`` to distribute them).

    ``text_features``: float [num_indices, text_dim], the catalogue's text encodings (text
    and hybrid item towers; :func:`tfrec_attn.text.features.text_features`)."""
    from tfrec_attn.layers.item_tower import build_item_tower
    from tfrec_attn.layers.user_tower import UserTower
    from tfrec_attn.tasks import build_task

    m = model_config
    user_tower = UserTower(
        m.embedding_dim, m.max_len, m.num_blocks, m.num_heads, m.ffn_dim, m.dropout,
        m.dropout if m.attention_dropout < 0 else m.attention_dropout, m.norm_first,
        m.positional, num_ratings=m.user_tower.num_ratings, name="user_tower")
    task = build_task(loss_config, num_indices, seed=seed)
    if item_counts is not None and hasattr(task, "set_item_counts"):
        task.set_item_counts(item_counts)
    item_tower = build_item_tower(m.item_tower, num_indices, m.embedding_dim, seed=seed,
                                  text_dim=0 if text_features is None else int(text_features.shape[1]))
    common = dict(scale_embeddings=m.scale_embeddings, item_bias=m.item_bias,
                  future_weight=loss_config.future_weight, static_shapes=static_shapes, name="retrieval")
    interests = m.user_tower
    if interests.interests == 1:
        model = SequentialRetrievalModel(item_tower, user_tower, task, **common)
    else:
        from tfrec_attn.layers.interests import CapsuleExtractor, InterestExtractor

        if interests.extraction == "capsule":
            extractor = CapsuleExtractor(interests.interests, interests.routing_iterations,
                                         residual=interests.residual, name="interests")
        else:
            extractor = InterestExtractor(interests.interests, interests.hidden_dim or 4 * m.embedding_dim,
                                          residual=interests.residual, name="interests")
        model = MultiInterestRetrievalModel(
            item_tower, user_tower, task, extractor, selection=interests.selection,
            selection_temperature=interests.selection_temperature, diversity_weight=interests.diversity_weight,
            diversity_margin=interests.diversity_margin, aggregation=interests.aggregation,
            balance_weight=interests.balance_weight,
            seed=seed, **common)
    if text_features is not None and hasattr(model.item_tower, "set_text_features"):
        model.item_tower.set_text_features(text_features)
    return model.build_weights()
