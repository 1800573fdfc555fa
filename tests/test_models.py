"""Parametrized smoke tests over every registered model (timm-style), and initialisation rules."""
import pytest
import torch

from ticketkit.errors import TicketkitError
from ticketkit.models import MODELS, create_model, prunable_names


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_forward_backward_every_model(arch):
    model = create_model(arch, 100, seed=0, embed_dim=16, num_filters=8, hidden_size=16)
    ids = torch.randint(1, 100, (4, 20))
    ids[0, 2:] = 0  # a very short review, right-padded (shorter than the widest filter)
    lengths = torch.tensor([2, 20, 10, 5])
    out = model(ids, lengths)
    assert out.shape == (4, 2)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_init_is_determined_by_seed(arch):
    a = create_model(arch, 100, seed=3, embed_dim=16, num_filters=8, hidden_size=16).state_dict()
    torch.manual_seed(12345)  # global RNG state must not matter
    b = create_model(arch, 100, seed=3, embed_dim=16, num_filters=8, hidden_size=16).state_dict()
    c = create_model(arch, 100, seed=4, embed_dim=16, num_filters=8, hidden_size=16).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_init_does_not_depend_on_the_thread_count(arch):
    """A worker process trains with 1 thread; its arms must start from the caller's exact weights."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        a = create_model(arch, 3000, seed=0).state_dict()
        torch.set_num_threads(1)
        b = create_model(arch, 3000, seed=0).state_dict()
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lstm_recurrent_matrices_are_orthogonal_per_gate():
    m = create_model("lstm", 100, seed=0, embed_dim=16, hidden_size=16)
    for g in m.lstm.weight_hh_l0.data.chunk(4, 0):
        assert torch.allclose(g @ g.T, torch.eye(16), atol=1e-5)
    assert (m.lstm.bias_ih_l0 == 0).all()


def test_lstm_pools_over_real_tokens_only():
    m = create_model("lstm", 100, seed=0, embed_dim=16, hidden_size=16).eval()
    ids = torch.randint(1, 100, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 10, dtype=torch.long)], 1)
    a = m(ids, torch.tensor([6]))
    b = m(padded, torch.tensor([6]))
    assert torch.allclose(a, b, atol=1e-6)


def test_prunable_weights_are_the_matrices_not_the_biases():
    cnn = create_model("cnn", 100, seed=0)
    assert prunable_names(cnn) == ["embedding.weight", "convs.0.weight", "convs.1.weight", "convs.2.weight", "fc.weight"]
    lstm = create_model("lstm", 100, seed=0)
    assert prunable_names(lstm) == ["embedding.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0", "fc.weight"]
    assert prunable_names(lstm, exclude=["embedding.weight"])[0] == "lstm.weight_ih_l0"
    with pytest.raises(TicketkitError, match="unknown parameter"):
        prunable_names(lstm, exclude=["nope.weight"])


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(TicketkitError, match="unknown architecture 'gpt'"):
        create_model("gpt", 10)
