"""Native pointer-network specifics: conditioning, inputs, hashing, speed-relevant shapes."""

from __future__ import annotations

import zlib

import pytest
import torch

from flexrec.policies.native import NativePolicy, instruction_words
from flexrec.testing.batches import make_batch


def test_steps_depend_on_the_placed_prefix() -> None:
    policy = NativePolicy(num_features=4, num_needs=3, dim=32, seed=0)
    batch = make_batch(batch_size=1, num_candidates=5, seed=0)
    perms = torch.tensor([[[0, 1, 2, 3, 4], [1, 0, 2, 3, 4]]])
    _, steps = policy.log_probs(batch, perms)
    # The prefix summary is the mean over a_<k: the same placed set gives the same step.
    torch.testing.assert_close(steps[0, 0, 2], steps[0, 1, 2])
    other = torch.tensor([[[0, 2, 1, 3, 4]]])
    _, steps_other = policy.log_probs(batch, other)
    # Different placed set: renormalised over other candidates, and the scores change too.
    assert not torch.allclose(steps[0, 0, 2, 3:], steps_other[0, 0, 2, 3:])


def test_inputs_change_the_scores() -> None:
    policy = NativePolicy(num_features=4, num_needs=3, dim=32, seed=0)
    batch = make_batch(batch_size=2, num_candidates=5, seed=0)
    perms = torch.arange(5).view(1, 1, 5).expand(2, 1, 5)
    base, _ = policy.log_probs(batch, perms)
    for field, value in [
        ("need_index", (batch.need_index + 1) % 3),
        ("candidate_features", batch.candidate_features + 1.0),
        ("history_ids", torch.full_like(batch.history_ids, -1)),
    ]:
        changed = make_batch(batch_size=2, num_candidates=5, seed=0)
        setattr(changed, field, value)
        other, _ = policy.log_probs(changed, perms)
        assert not torch.allclose(base, other), field


def test_minimal_batch_without_optional_fields_hashes_ids() -> None:
    policy = NativePolicy(hash_buckets=64, dim=16, seed=1)
    batch = make_batch(batch_size=2, num_candidates=4, seed=0)
    batch.history_ids = batch.history_labels = batch.need_index = None
    batch.candidate_features = None
    batch.candidate_ids = batch.candidate_ids + 10_000
    rollout = policy.sample(batch, 3)
    torch.testing.assert_close(policy.log_probs(batch, rollout.permutations)[0], rollout.logprobs)


def test_feature_dimension_mismatch_is_reported() -> None:
    policy = NativePolicy(num_features=3, dim=16)
    with pytest.raises(ValueError, match="F=4.*num_features=3"):
        policy.rank(make_batch(batch_size=1, num_candidates=3, num_features=4))


def test_seed_makes_initialisation_reproducible_and_keeps_global_rng() -> None:
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    a, b = NativePolicy(dim=16, seed=7), NativePolicy(dim=16, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_reference_is_frozen_in_eval_and_excluded_from_training() -> None:
    policy = NativePolicy(dim=16, dropout=0.1, seed=0)
    policy.train()
    assert policy.net.training and not policy.reference.training
    trainable = {id(p) for p in policy.trainable_parameters()}
    assert not any(id(p) in trainable for p in policy.reference.parameters())
    assert "reference.item_embedding.weight" in policy.state_dict()


def test_default_size_rl_step_runs_on_a_realistic_batch() -> None:
    policy = NativePolicy(num_features=4, num_needs=3, seed=0)
    batch = make_batch(batch_size=32, num_candidates=20, seed=0)
    rollout = policy.sample(batch, 8)
    logprobs, steps = policy.log_probs(batch, rollout.permutations)
    (-logprobs.mean()).backward()
    assert steps.shape == (32, 8, 20, 20)
    torch.testing.assert_close(logprobs.detach(), rollout.logprobs, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dim": -3}, "dim must be a positive integer"),
        ({"dim": 30, "num_heads": 4}, "divisible by num_heads=4"),
        ({"num_items": 0}, "num_items must be a positive integer"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"need_encoder": "bert"}, r"need_encoder must be one of \['index', 'text'\]"),
        ({"word_buckets": 0}, "word_buckets must be a positive integer"),
        ({"item_init_std": -1.0}, "item_init_std must be >= 0"),
    ],
)
def test_bad_arguments_raise_value_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NativePolicy(**kwargs)


def test_instruction_words_hash_lower_case_words_stably() -> None:
    ids, offsets = instruction_words(["Rank by ENJOY, enjoy!", "", "new"], 1024)
    assert offsets.tolist() == [0, 4, 5]
    # words: rank, by, enjoy, enjoy → the two "enjoy" share a bucket; the empty text gets one id
    assert ids[2] == ids[3] and len(ids) == 6
    assert ids[5].item() == zlib.crc32(b"new") % 1024
    assert ids[4].item() == zlib.crc32(b"") % 1024


def test_text_need_encoder_reads_the_instruction_not_the_index() -> None:
    batch = make_batch(batch_size=2, num_candidates=5, seed=0)
    perms = torch.arange(5).view(1, 1, 5).expand(2, 1, 5)
    text = NativePolicy(num_features=4, num_needs=3, dim=32, need_encoder="text", seed=0)
    index = NativePolicy(num_features=4, num_needs=3, dim=32, seed=0)

    def logp(policy: NativePolicy, **fields: object) -> torch.Tensor:
        changed = make_batch(batch_size=2, num_candidates=5, seed=0)
        for key, value in fields.items():
            setattr(changed, key, value)
        return policy.log_probs(changed, perms)[0]

    other_text = ["Surprise me with something new.", "Show me what is trending."]
    other_index = (batch.need_index + 1) % 3
    assert not torch.allclose(logp(text), logp(text, instruction=other_text))
    torch.testing.assert_close(logp(text), logp(text, need_index=other_index))
    torch.testing.assert_close(logp(index), logp(index, instruction=other_text))
    assert not torch.allclose(logp(index), logp(index, need_index=other_index))
    # case and punctuation do not matter: same words, same context
    shouted = [s.upper() + "!!" for s in batch.instruction]
    torch.testing.assert_close(logp(text), logp(text, instruction=shouted))
    assert not hasattr(text.net, "need_embedding") and not hasattr(index.net, "word_embedding")


def test_item_init_std_rescales_the_same_initial_draw() -> None:
    default = NativePolicy(num_items=50, num_features=4, num_needs=3, dim=16, seed=3)
    unit = NativePolicy(
        num_items=50, num_features=4, num_needs=3, dim=16, item_init_std=1.0, seed=3
    )
    # std 1.0 is nn.Embedding's own N(0, 1) draw; the default rescales that same draw to 0.02
    assert 0.9 < unit.net.item_embedding.weight.std().item() < 1.1
    small = default
    a, b = unit.net.item_embedding.weight, small.net.item_embedding.weight
    torch.testing.assert_close(b, 0.02 * a)
    # every other parameter is drawn exactly as before (the rescale makes no new random draws)
    pairs = zip(unit.net.named_parameters(), small.net.named_parameters(), strict=True)
    for (name, p), (_, q) in pairs:
        if name != "item_embedding.weight":
            torch.testing.assert_close(p, q)
    # and pi_ref starts equal to pi
    torch.testing.assert_close(small.reference.item_embedding.weight, b)
