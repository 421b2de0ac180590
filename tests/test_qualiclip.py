"""QualiCLIP: scoring rule, CLIP RN50 layout and loader, tokenizer, and 'unavailable' reporting."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import softmax

from reggan_core.errors import RegGANError
from reggan_core.metrics import qualiclip as qc


def test_scoring_rule_matches_direct_recomputation():
    """Mean over pairs of softmax(100 * cosine) of the positive prompt, computed by hand in float64."""
    rng = np.random.default_rng(0)
    img = rng.normal(size=(5, 32))
    txt = rng.normal(size=(14, 32))
    for temperature in (1.0, 2.0):
        got = qc.quality_from_features(torch.tensor(img), torch.tensor(txt), 100.0, temperature).numpy()
        want = np.zeros(5)
        for n in range(5):
            u = img[n] / np.linalg.norm(img[n])
            scores = []
            for k in range(7):
                pos, neg = txt[2 * k] / np.linalg.norm(txt[2 * k]), txt[2 * k + 1] / np.linalg.norm(txt[2 * k + 1])
                logits = np.array([u @ pos, u @ neg]) * 100.0 / temperature
                scores.append(softmax(logits)[0])
            want[n] = np.mean(scores)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.all((got >= 0) & (got <= 1))


def test_scoring_rule_orders_positive_and_negative_prompts():
    """An image embedding equal to every positive prompt scores above 0.5, the mirror below."""
    txt = torch.randn(14, 16)
    pos = txt[0::2].mean(0, keepdim=True)
    neg = txt[1::2].mean(0, keepdim=True)
    assert qc.quality_from_features(pos, txt).item() > 0.5 > qc.quality_from_features(neg, txt).item()
    with pytest.raises(RegGANError):
        qc.quality_from_features(pos, txt[:13])


def test_prompts_are_the_published_antonym_pairs():
    assert len(qc.PROMPT_PAIRS) == 7
    assert qc.PROMPT_PAIRS[0] == ("Good photo.", "Bad photo.")
    assert all(len(p) == 2 and p[0] != p[1] for p in qc.PROMPT_PAIRS)


def test_attention_pool_matches_torch_multi_head_attention():
    """Our single-query attention pool equals torch's reference MHA read at the mean token."""
    torch.manual_seed(0)
    pool = qc.AttentionPool2d(grid=3, embed_dim=64, heads=4, output_dim=32).eval()
    x = torch.randn(2, 64, 3, 3)
    for pos in (False, True):
        tokens = x.flatten(2).permute(2, 0, 1)
        tokens = torch.cat([tokens.mean(0, keepdim=True), tokens], 0)
        if pos:
            tokens = tokens + pool.positional_embedding[:, None, :]
        ref, _ = F.multi_head_attention_forward(
            tokens, tokens, tokens, 64, 4, None,
            torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]), None, None, False, 0.0,
            pool.c_proj.weight, pool.c_proj.bias, training=False, need_weights=False,
            use_separate_proj_weight=True, q_proj_weight=pool.q_proj.weight,
            k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight)
        torch.testing.assert_close(pool(x, pos_embedding=pos), ref[0], rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def rn50():
    torch.manual_seed(0)
    return qc.CLIP(qc.ClipConfig()).eval()


def test_rn50_has_the_published_layout(rn50):
    """OpenAI's RN50: 102,007,137 parameters (38.3 M image, 63.7 M text) and its key names/shapes."""
    n_params = sum(p.numel() for p in rn50.parameters())
    assert n_params == 102_007_137
    assert sum(p.numel() for p in rn50.visual.parameters()) == 38_316_896
    sd = rn50.state_dict()
    shapes = {
        "visual.conv1.weight": (32, 3, 3, 3),
        "visual.layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "visual.layer4.2.bn3.running_var": (2048,),
        "visual.attnpool.positional_embedding": (50, 2048),
        "visual.attnpool.c_proj.weight": (1024, 2048),
        "transformer.resblocks.11.attn.in_proj_weight": (1536, 512),
        "transformer.resblocks.0.mlp.c_fc.weight": (2048, 512),
        "token_embedding.weight": (49408, 512),
        "positional_embedding": (77, 512),
        "text_projection": (512, 1024),
        "logit_scale": (),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert qc.ClipConfig.from_state_dict(sd) == qc.ClipConfig()


def test_loader_roundtrip_on_saved_rn50_state_dict(rn50, tmp_path):
    """A state dict of the real QualiCLIP layout saved here loads by path and scores identically."""
    prompts = F.normalize(torch.randn(14, 1024), dim=-1)
    path = tmp_path / "qualiclip.pth"
    torch.save({**{f"clip_model.{k}": v for k, v in rn50.state_dict().items()}, "prompts_features": prompts}, path)
    loaded = qc.load_qualiclip(path)
    assert loaded.variant == "qualiclip"
    for k, v in rn50.state_dict().items():
        assert torch.equal(loaded.clip.state_dict()[k], v), k
    images = np.random.default_rng(1).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    direct = qc.QualiCLIP(rn50, prompts)
    np.testing.assert_array_equal(loaded.score(images), direct.score(images))
    # and the score is the documented pipeline: resize to 224, CLIP-normalise, encode, pairwise softmax
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=(224, 224), mode="bicubic", antialias=True).clamp(0, 1)
    x = (x - torch.tensor(qc.CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(qc.CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        want = qc.quality_from_features(rn50.encode_image(x), prompts, 100.0)
    np.testing.assert_allclose(loaded.score(images), want.numpy(), rtol=1e-6)
    # float tensors in [-1, 1] (generator outputs) score like the same images as uint8
    t = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    np.testing.assert_allclose(loaded.score(t), loaded.score(images), atol=1e-5)


def test_loader_accepts_wrapped_and_refuses_wrong_files(rn50, tmp_path):
    prompts = torch.randn(14, 1024)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"params": {**{f"module.{k}": v for k, v in rn50.state_dict().items()},
                           "prompts_features": prompts}}, wrapped)
    assert qc.load_qualiclip(wrapped).variant == "qualiclip"

    with pytest.raises(qc.QualiCLIPUnavailable, match="do not exist"):
        qc.load_qualiclip(tmp_path / "missing.pth")
    partial = tmp_path / "partial.pth"
    sd = rn50.state_dict()
    torch.save({**{k: v for k, v in sd.items() if not k.startswith("transformer.resblocks.3.")},
                "prompts_features": prompts}, partial)
    with pytest.raises(RegGANError, match="does not match the CLIP RN50 layout"):
        qc.load_qualiclip(partial)
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, other)
    with pytest.raises(RegGANError, match="not a CLIP ResNet state dict"):
        qc.load_qualiclip(other)
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": object.__new__(qc.ClipConfig)}, pickled)
    with pytest.raises(RegGANError, match="cannot be read as a plain state dict"):
        qc.load_qualiclip(pickled)


def test_unavailable_without_weights_never_scores(monkeypatch, tmp_path):
    monkeypatch.delenv(qc.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("REGGAN_CACHE", str(tmp_path))
    monkeypatch.setattr(qc.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(qc.QualiCLIPUnavailable) as err:
        qc.qualiclip_scores(np.zeros((1, 128, 128, 3), np.uint8))
    msg = str(err.value)
    assert "\n" not in msg and "unavailable" in msg and qc.WEIGHTS_URL in msg


def _tokenizer():
    if qc.find_vocab() is None:
        pytest.skip("CLIP vocabulary not installed (pip install --no-deps open_clip_torch)")
    return qc.SimpleTokenizer()


def test_tokenizer_on_known_strings():
    """Ids of OpenAI CLIP's tokenizer (49408-token BPE; SOT 49406, EOT 49407)."""
    tok = _tokenizer()
    assert len(tok.encoder) == 49408 and (tok.sot, tok.eot) == (49406, 49407)
    assert tok.encode("a diagram") == [320, 22697]
    assert tok.encode("a dog") == [320, 1929]
    assert tok.encode("A photo of a CAT") == [320, 1125, 539, 320, 2368]
    ids = tok(["Good photo.", "Bad photo."])
    assert ids.shape == (2, 77) and ids[0, 0] == 49406
    assert ids[0].argmax() == ids[0].tolist().index(49407)  # EOT is where CLIP reads the text feature
    for text in ("high-resolution image.", "noise-free image.", "naïve café"):
        assert tok.decode(tok.encode(text)).replace(" ", "") == text.replace(" ", "")


def test_plain_clip_weights_encode_prompts_with_text_tower(rn50, tmp_path):
    """Without prompt features the prompts go through the tokenizer and text transformer."""
    tok = _tokenizer()
    path = tmp_path / "clip_rn50_state.pth"
    torch.save(rn50.state_dict(), path)
    model = qc.load_qualiclip(path)
    assert model.variant == "clip-rn50-zero-shot"
    want = qc.prompt_features_from_text(rn50, tok)
    torch.testing.assert_close(model.prompt_features, want)
    assert model.prompt_features.shape == (14, 1024)
