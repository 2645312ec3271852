# Anchor: Hugging Face transformers (+peft) SFT step throughput on random-init Qwen3 shapes.
# Copy of the project's shared anchor with two additions: `device_used_gib` (cudaMemGetInfo total - free,
# the figure bench/Anneal.Bench reports) and an optional row filter: hf_anchor.py qwen3-0.6b:full qwen3-4b:full:ckpt
import time, json, sys, os, torch
from transformers import Qwen3Config, Qwen3ForCausalLM
SHAPES = {
 "qwen3-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
 "qwen3-1.7b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
 "qwen3-4b": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
}
def run(name, mode, seq=2048, micro=4, steps=6, ckpt=False):
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=151936, max_position_embeddings=40960, rope_theta=1000000.0, rms_norm_eps=1e-6, **SHAPES[name])
    cfg._attn_implementation = "sdpa"
    with torch.device("cuda"):
        model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    nparams = sum(p.numel() for p in model.parameters())
    if ckpt: model.gradient_checkpointing_enable(); model.config.use_cache=False
    if mode == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"]))
        if ckpt: model.enable_input_require_grads()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=True)
    torch.cuda.reset_peak_memory_stats()
    x = torch.randint(0, 151936, (micro, seq), device="cuda")
    def step():
        out = model(input_ids=x, labels=x)
        out.loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    for _ in range(2): step()
    torch.cuda.synchronize(); t=time.perf_counter()
    for _ in range(steps): step()
    torch.cuda.synchronize(); dt=(time.perf_counter()-t)/steps
    tok = micro*seq/dt
    nonemb = nparams - 151936*cfg.hidden_size
    flops_tok = 6*nparams + 12*cfg.num_hidden_layers*cfg.num_attention_heads*cfg.head_dim*seq/2
    if mode=="lora": flops_tok = 4*nparams + 12*cfg.num_hidden_layers*cfg.num_attention_heads*cfg.head_dim*seq/2  # no weight-grad for frozen base
    r = dict(model=name, mode=mode, seq=seq, micro=micro, ckpt=ckpt, params_b=round(nparams/1e9,3), step_ms=round(dt*1000,1), tokens_per_s=round(tok), tflops=round(tok*flops_tok/1e12,1), peak_gib=round(torch.cuda.max_memory_allocated()/2**30,1), device_used_gib=round((lambda f,t: (t-f)/2**30)(*torch.cuda.mem_get_info()),1), mfu=round(tok*flops_tok/1e12/989,3))
    print(json.dumps(r), flush=True)
    del model, opt; torch.cuda.empty_cache()
    return r
ROWS = [("qwen3-0.6b","full",4,False),("qwen3-1.7b","full",4,False),("qwen3-0.6b","lora",4,False),("qwen3-1.7b","lora",4,False),("qwen3-4b","lora",4,False),("qwen3-4b","full",2,True)]
want = sys.argv[1:]
res=[]
for name, mode, micro, ckpt in ROWS:
    if want and f"{name}:{mode}" + (":ckpt" if ckpt else "") not in want: continue
    try: res.append(run(name, mode, micro=micro, ckpt=ckpt))
    except Exception as e: print(json.dumps(dict(model=name, mode=mode, micro=micro, ckpt=ckpt, error=str(e)[:300])), flush=True); torch.cuda.empty_cache()
os.makedirs(os.environ.get("OUT","/tmp"), exist_ok=True)
json.dump(res, open(os.path.join(os.environ.get("OUT","/tmp"),"hf_anchor.json"),"w"), indent=1)
