import torch
import torch.nn.functional as F

from oneshot.encoders import Conv4
from oneshot.methods import Episode, ProtoNet
from oneshot.methods.base import prototypes, squared_euclidean


def brute_force_protonet_loss(z_support, support_labels, z_query, query_labels, ways):
    protos = []
    for c in range(ways):
        members = [z_support[i] for i in range(len(support_labels)) if int(support_labels[i]) == c]
        protos.append(sum(members) / len(members))
    total = 0.0
    for q in range(len(query_labels)):
        d = torch.stack([((z_query[q] - p) ** 2).sum() for p in protos])
        logp = -d - torch.logsumexp(-d, 0)
        total = total - logp[int(query_labels[q])]
    return total / len(query_labels)


def test_prototypes_and_distances_match_loops():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(12, 7, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 3, 3])
    p = prototypes(z, labels, 4)
    for c in range(4):
        assert torch.allclose(p[c], z[labels == c].mean(0))
    q = torch.randn(5, 7, generator=g, dtype=torch.float64)
    d = squared_euclidean(q, p)
    for i in range(5):
        for c in range(4):
            assert torch.allclose(d[i, c], ((q[i] - p[c]) ** 2).sum())


def test_protonet_loss_matches_brute_force():
    torch.manual_seed(0)
    model = ProtoNet(Conv4()).double()
    ways, shots, queries = 4, 3, 2
    support = torch.rand(ways * shots, 1, 28, 28, dtype=torch.float64)
    query = torch.rand(ways * queries, 1, 28, 28, dtype=torch.float64)
    s_lab = torch.arange(ways).repeat_interleave(shots)
    q_lab = torch.arange(ways).repeat_interleave(queries)
    loss, logits = model.loss(Episode(support, s_lab, query, q_lab, ways, shots))
    # Same forward pass (batch norm over support and query together) for the reference.
    z = model.encoder(torch.cat([support, query]))
    ref = brute_force_protonet_loss(z[: ways * shots], s_lab, z[ways * shots :], q_lab, ways)
    assert torch.allclose(loss, ref, atol=1e-9)
    assert torch.allclose(F.cross_entropy(logits, q_lab), ref, atol=1e-9)
    assert logits.shape == (ways * queries, ways)


def test_conv4_pool_before_relu_is_the_classic_block():
    torch.manual_seed(0)
    enc = Conv4().eval()
    x = torch.rand(3, 1, 28, 28)
    h = x
    for i in range(0, len(enc.features), 4):
        conv, bn, pool, _ = enc.features[i : i + 4]
        h = F.max_pool2d(F.relu(bn(conv(h))), 2)  # the papers' order: conv, BN, ReLU, pool
    assert torch.allclose(enc(x), h.flatten(1), atol=1e-6)
    assert enc(x).shape == (3, 64)
