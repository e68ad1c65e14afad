from __future__ import annotations

import torch

from autocomp.profile import profile_model


def test_digits_has_at_least_eight_quantizable_layers(digits_layers):
    assert len(digits_layers) >= 8
    assert [l.index for l in digits_layers] == list(range(len(digits_layers)))
    assert all(l.macs > 0 and l.params > 0 for l in digits_layers)


def test_macs_match_hand_computation():
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, groups=1), torch.nn.ReLU(),
                            torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4), torch.nn.Flatten(),
                            torch.nn.Linear(8 * 4 * 4, 10), torch.nn.Conv1d(1, 2, 3))
    x = torch.zeros(2, 3, 8, 8)

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = m

        def forward(self, x):
            y = m[:5](x)
            return m[5](y[:, None, :])

    layers = {l.name: l for l in profile_model(Wrap(), x)}
    assert layers["m.0"].macs == 8 * 8 * 8 * (3 * 3 * 3)
    assert layers["m.2"].macs == 8 * 4 * 4 * (2 * 3 * 3)   # grouped conv: fan-in is in/groups
    assert layers["m.4"].macs == 10 * 128
    assert layers["m.5"].macs == 2 * 8 * (1 * 3)
    assert layers["m.0"].weight_shape == (8, 3, 3, 3) and layers["m.0"].bias_params == 8
    assert layers["m.4"].in_shape == (128,) and layers["m.4"].out_shape == (10,)


def test_layer_called_twice_counts_macs_twice():
    lin = torch.nn.Linear(4, 4)

    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(self.lin(x))

    (l,) = profile_model(Twice(), torch.zeros(3, 4))
    assert l.macs == 2 * 16


def test_torchvision_resnet18_and_mobilenet_v2():
    import torchvision

    r = profile_model(torchvision.models.resnet18(weights=None), torch.zeros(1, 3, 64, 64))
    assert len(r) == 21 and r[0].name == "conv1" and r[-1].name == "fc"
    assert sum(l.params for l in r) == sum(
        m.weight.numel() for m in torchvision.models.resnet18(weights=None).modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    # At 224x224, torchvision's resnet18 is the well-known ~1.8 GMACs.
    full = profile_model(torchvision.models.resnet18(weights=None), torch.zeros(1, 3, 224, 224))
    assert 1.75e9 < sum(l.macs for l in full) < 1.85e9
    mb = profile_model(torchvision.models.mobilenet_v2(weights=None), torch.zeros(1, 3, 64, 64))
    assert len(mb) == 53
    dw = [l for l in mb if l.kind == "Conv2d" and l.weight_shape[1] == 1]
    assert dw and all(l.macs == l.out_shape[1] * l.out_shape[2] * l.weight_shape[0] * 9 for l in dw)


def test_bert_encoder_from_config_and_gpt2_conv1d():
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=32)
    bert = BertModel(cfg).eval()
    ids = torch.randint(0, 100, (2, 16))
    layers = profile_model(bert, {"input_ids": ids})
    names = [l.name for l in layers]
    assert "encoder.layer.0.attention.self.query" in names
    assert sum(1 for n in names if n.startswith("encoder.layer.")) == 2 * 6
    q = next(l for l in layers if l.name == "encoder.layer.0.attention.self.query")
    assert q.macs == 16 * 32 * 32
    g = GPT2Model(GPT2Config(vocab_size=100, n_embd=32, n_layer=1, n_head=2, n_positions=32)).eval()
    gl = {l.name: l for l in profile_model(g, {"input_ids": ids})}
    attn = gl["h.0.attn.c_attn"]
    assert attn.kind == "Conv1D" and attn.weight_shape == (96, 32)  # output channels first
    assert attn.macs == 16 * 96 * 32
