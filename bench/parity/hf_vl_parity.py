# Reference side of the Qwen3-VL parity check (PyTorch + transformers + Pillow; a GPU when there is
# one, the CPU otherwise). Builds a small random-initialised Qwen3VLForConditionalGeneration (4 text
# layers, a 4-block tower with two deepstack taps, interleaved MRoPE), saves it with save_pretrained
# (safetensors, bf16) together with the image processor's preprocessor_config.json, draws two
# images of different sizes, and writes for ONE multimodal example (text, image, text, image, a
# trained answer):
#   - the processor's pixel_values and image_grid_thw (so Anneal's preprocessing is compared too,
#     and its model runs on exactly these pixels);
#   - from exactly the saved bf16 weights, in fp32 (the reference) and in bf16 (transformers' own
#     bf16 error): logits at a fixed subset of vocabulary columns, each position's log-sum-exp and
#     argmax over the full vocabulary, and the mean cross-entropy over the answer tokens.
# Usage: python3 hf_vl_parity.py [OUT_DIR]   (default $OUT or ./results) → OUT_DIR/vl_parity_model/,
#   OUT_DIR/vl_parity_inputs.safetensors, OUT_DIR/vl_parity_image{0,1}.png, OUT_DIR/vl_parity_reference.json.
# Anneal's side: Anneal.Bench vl-parity; then compare_vl_parity.py (run-gpu.sh vl-parity runs all three).
import inspect, json, os, sys
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
import transformers
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
try:
    from transformers import Qwen2VLImageProcessorFast as ImageProcessor   # torchvision backend (v5's default)
    backend = "Qwen2VLImageProcessorFast"
    ImageProcessor()  # raises without torchvision
except Exception:
    from transformers import Qwen2VLImageProcessor as ImageProcessor       # PIL backend
    backend = "Qwen2VLImageProcessor"

out = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", "results")
os.makedirs(out, exist_ok=True)
dev = "cuda" if torch.cuda.is_available() else "cpu"
torch.backends.cuda.matmul.allow_tf32 = False   # the fp32 reference is full fp32
torch.backends.cudnn.allow_tf32 = False

IMG, VID, VS, VE = 4000, 4001, 4002, 4003
MIN_PIXELS, MAX_PIXELS = 4096, 65536
text = dict(vocab_size=4096, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=64, max_position_embeddings=4096, rope_theta=5e6, rms_norm_eps=1e-6,
            rope_scaling={"rope_type": "default", "mrope_section": [12, 10, 10], "mrope_interleaved": True},
            tie_word_embeddings=True, hidden_act="silu", attention_bias=False)
vision = dict(depth=4, hidden_size=128, intermediate_size=256, num_heads=4, in_channels=3, patch_size=16,
              spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=256, num_position_embeddings=64,
              deepstack_visual_indexes=[1, 2], hidden_act="gelu_pytorch_tanh")
cfg = Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=IMG, video_token_id=VID,
                    vision_start_token_id=VS, vision_end_token_id=VE, tie_word_embeddings=True)
# v5 keeps RoPE in rope_parameters (it converts rope_scaling, but say it explicitly).
rp = getattr(cfg.text_config, "rope_parameters", None)
if isinstance(rp, dict):
    rp.update(rope_type="default", rope_theta=5e6, mrope_section=[12, 10, 10], mrope_interleaved=True)
cfg._attn_implementation = "sdpa"
cfg.text_config._attn_implementation = "sdpa"
cfg.vision_config._attn_implementation = "sdpa"

torch.manual_seed(0)
model = Qwen3VLForConditionalGeneration(cfg).to(torch.bfloat16)
folder = os.path.join(out, "vl_parity_model")
model.save_pretrained(folder, safe_serialization=True)
state = {k: v.clone() for k, v in model.state_dict().items()}   # the saved bf16 weights
proc = ImageProcessor(size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}, patch_size=16,
                      temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
proc.save_pretrained(folder)

# Two images of odd sizes: smooth gradients with a pattern, so resizing matters but is well defined.
g = torch.Generator().manual_seed(1)
def picture(h, w, seed):
    y = torch.linspace(0, 1, h).unsqueeze(1).expand(h, w)
    x = torch.linspace(0, 1, w).unsqueeze(0).expand(h, w)
    r = (255 * (0.5 + 0.5 * torch.sin(6.0 * x + seed))).round()
    gr = (255 * y).round()
    b = (255 * ((x * 7 + y * 5) % 1.0)).round()
    return torch.stack([r, gr, b], -1).to(torch.uint8)
paths = []
for i, (h, w) in enumerate([(110, 150), (200, 90)]):
    p = os.path.join(out, f"vl_parity_image{i}.png")
    Image.fromarray(picture(h, w, i).numpy(), "RGB").save(p)
    paths.append(p)
images = [Image.open(p).convert("RGB") for p in paths]
processed = proc(images=images, return_tensors="pt")
pixel_values, grid = processed["pixel_values"].float(), processed["image_grid_thw"].long()
tokens = [int(t * h * w // 4) for t, h, w in grid.tolist()]

# text, <vision_start> image pads <vision_end>, text, second image, text, then a 20-token answer.
def words(n):
    return torch.randint(10, 3900, (n,), generator=g).tolist()
ids = words(5) + [VS] + [IMG] * tokens[0] + [VE] + words(7) + [VS] + [IMG] * tokens[1] + [VE] + words(6)
answer = words(20)
labels = [-100] * len(ids) + answer
ids = ids + answer
input_ids = torch.tensor([ids])
label_ids = torch.tensor([labels])
save_file({"input_ids": input_ids, "labels": label_ids, "pixel_values": pixel_values.contiguous(),
           "image_grid_thw": grid.contiguous()}, os.path.join(out, "vl_parity_inputs.safetensors"))

columns = list(range(0, cfg.text_config.vocab_size, 7))
accepts_mm = "mm_token_type_ids" in inspect.signature(Qwen3VLForConditionalGeneration.forward).parameters \
    or "mm_token_type_ids" in inspect.signature(type(model.model).forward).parameters

def run(dtype):
    m = Qwen3VLForConditionalGeneration(cfg)
    m.load_state_dict(state)
    m = m.to(device=dev, dtype=dtype).eval()
    ids_d = input_ids.to(dev)
    kw = dict(input_ids=ids_d, attention_mask=torch.ones_like(ids_d), pixel_values=pixel_values.to(dev),
              image_grid_thw=grid.to(dev))
    if accepts_mm:   # v5 builds 3-D positions only when told which tokens are image tokens
        kw["mm_token_type_ids"] = (ids_d == IMG).long()
    with torch.no_grad():
        z = m(**kw).logits.float()[0]                                            # (T, V)
    loss = F.cross_entropy(z[:-1], label_ids[0, 1:].to(dev), ignore_index=-100)  # mean over the answer tokens
    r = dict(logits=z[:, columns].cpu().tolist(), lse=torch.logsumexp(z, -1).cpu().tolist(),
             argmax=z.argmax(-1).cpu().tolist(), loss=loss.item())
    del m
    if dev == "cuda":
        torch.cuda.empty_cache()
    return r

ref = dict(
    engine="transformers", transformers=transformers.__version__, torch=torch.__version__,
    device=torch.cuda.get_device_name() if dev == "cuda" else "cpu", image_processor=backend,
    model_dir="vl_parity_model", inputs="vl_parity_inputs.safetensors", images=[os.path.basename(p) for p in paths],
    config=dict(text_layers=4, hidden=256, vision_depth=4, deepstack=[1, 2], vocab=cfg.text_config.vocab_size),
    tokens=len(ids), image_tokens=tokens, grids=grid.tolist(), logit_columns=columns,
    fp32=run(torch.float32), bf16=run(torch.bfloat16),
)
path = os.path.join(out, "vl_parity_reference.json")
json.dump(ref, open(path, "w"))
print(f"wrote {folder} and {path}: {len(ids)} tokens, image tokens {tokens} ({backend}); "
      f"loss fp32 {ref['fp32']['loss']:.5f}, bf16 {ref['bf16']['loss']:.5f}", flush=True)
