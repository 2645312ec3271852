# Reference side of the parity check (GPU machine: PyTorch + transformers). Builds a random-initialised
# Qwen3ForCausalLM with Qwen3-0.6B's widths but fewer layers, saves it as a Hugging Face folder
# (save_pretrained, safetensors, bf16), then from exactly those bf16 weights computes
#   - logits on fixed token ids, in fp32 (the reference) and in bf16 (Hugging Face's own bf16 error),
#     stored for a fixed subset of vocabulary columns, plus each position's log-sum-exp and argmax
#     over the full vocabulary;
#   - the losses of the first STEPS training steps, plain AdamW (no weight decay, no clipping,
#     constant lr), on fixed random batches that are written out so Anneal trains on identical data:
#     fp32 weights/moments (the reference) and pure bf16 (as hf_anchor.py trains).
# Usage: python3 hf_parity.py [OUT_DIR]   (default $OUT or ./results) → OUT_DIR/parity_model/,
#        OUT_DIR/parity_reference.json. Anneal's side: Anneal.Bench parity; then compare_parity.py.
import json, os, sys, torch
from transformers import Qwen3Config, Qwen3ForCausalLM

LAYERS, STEPS, LR, BATCH, SEQ, DISTINCT_BATCHES = 4, 20, 1e-4, 2, 128, 4
out = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", "results")
os.makedirs(out, exist_ok=True)
dev = "cuda" if torch.cuda.is_available() else "cpu"
torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 reference is full fp32 (PyTorch's default, made explicit)
torch.backends.cudnn.allow_tf32 = False

cfg = Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=LAYERS,
                  num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                  rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True)
cfg._attn_implementation = "sdpa"
torch.manual_seed(0)
model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
folder = os.path.join(out, "parity_model")
model.save_pretrained(folder, safe_serialization=True)
state = {k: v.clone() for k, v in model.state_dict().items()}  # the saved bf16 weights

g = torch.Generator().manual_seed(1)
logit_ids = torch.randint(0, cfg.vocab_size, (2, 64), generator=g)
columns = list(range(0, cfg.vocab_size, 151))  # 1,007 columns compared value by value
batches = [torch.randint(0, cfg.vocab_size, (BATCH, SEQ), generator=g) for _ in range(DISTINCT_BATCHES)]
schedule = [s % DISTINCT_BATCHES for s in range(STEPS)]  # batches repeat, so the loss falls as they are learnt

def fresh(dtype):
    m = Qwen3ForCausalLM(cfg)
    m.load_state_dict(state)  # tied: lm_head shares embed_tokens
    return m.to(device=dev, dtype=dtype)

def logits_of(dtype):
    m = fresh(dtype).eval()
    with torch.no_grad():
        z = m(input_ids=logit_ids.to(dev)).logits.float()  # (2, 64, V)
    r = dict(logits=z[:, :, columns].cpu().tolist(), lse=torch.logsumexp(z, -1).cpu().tolist(),
             argmax=z.argmax(-1).cpu().tolist())
    del m; torch.cuda.empty_cache() if dev == "cuda" else None
    return r

def losses_of(dtype):
    m = fresh(dtype).train()
    opt = torch.optim.AdamW(m.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    losses = []
    for b in schedule:
        ids = batches[b].to(dev)
        loss = m(input_ids=ids, labels=ids).loss  # mean over BATCH·(SEQ−1) next-token targets
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    del m, opt; torch.cuda.empty_cache() if dev == "cuda" else None
    return losses

ref = dict(
    engine="transformers", transformers=__import__("transformers").__version__, torch=torch.__version__,
    device=torch.cuda.get_device_name() if dev == "cuda" else "cpu", model_dir="parity_model",
    config=dict(layers=LAYERS, hidden=1024, vocab=cfg.vocab_size),
    logit_ids=logit_ids.tolist(), logit_columns=columns,
    logits=dict(fp32=logits_of(torch.float32), bf16=logits_of(torch.bfloat16)),
    train=dict(lr=LR, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0, max_grad_norm=None, steps=STEPS,
               batches=[b.tolist() for b in batches], schedule=schedule,
               losses=dict(fp32=losses_of(torch.float32), bf16=losses_of(torch.bfloat16))),
)
path = os.path.join(out, "parity_reference.json")
json.dump(ref, open(path, "w"))
print(f"wrote {folder} and {path}; fp32 losses {[round(x, 4) for x in ref['train']['losses']['fp32']]}", flush=True)
