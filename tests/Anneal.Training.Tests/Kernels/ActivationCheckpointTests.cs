// Activation checkpointing must give the loss and gradients of the same model without it.
using Anneal.Training.Kernels;
using Anneal.Training.Native;
using Anneal.Training.Tests.Native;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Anneal.Training.Tests.Kernels;

[Collection(TorchCollection.Name)]
public class ActivationCheckpointTests
{
    public ActivationCheckpointTests() => NativeLibraries.EnsureTorchLoaded();

    // A pre-norm residual MLP block: x + down(silu(gate(n(x))) * up(n(x))), n = RMSNorm with weight.
    sealed class Block : nn.Module<Tensor, Tensor>
    {
        readonly Parameter norm;
        readonly Linear gate, up, down;

        public Block(string name) : base(name)
        {
            norm = nn.Parameter(ones(16) + 0.1 * randn([16], generator: new Generator(16)));
            gate = nn.Linear(16, 32, hasBias: false);
            up = nn.Linear(16, 32, hasBias: false);
            down = nn.Linear(32, 16, hasBias: false);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x)
        {
            var n = x * rsqrt(x.square().mean([-1], keepdim: true) + 1e-6) * norm;
            return x + down.forward(nn.functional.silu(gate.forward(n)) * up.forward(n));
        }
    }

    sealed class TinyStack : nn.Module<Tensor, Tensor>
    {
        readonly Embedding embed;
        readonly ModuleList<Block> blocks;
        readonly Linear head;
        public bool Checkpointed { get; set; }

        public TinyStack() : base("tiny")
        {
            embed = nn.Embedding(20, 16);
            blocks = nn.ModuleList(new Block("b0"), new Block("b1"), new Block("b2"));
            head = nn.Linear(16, 20, hasBias: false);
            RegisterComponents();
        }

        public Embedding Embed => embed;

        public override Tensor forward(Tensor tokens)
        {
            var x = embed.forward(tokens);  // [B, T, 16]
            foreach (var block in blocks)
                x = Checkpointed ? ActivationCheckpoint.Run(block.forward, x, block.parameters()) : block.forward(x);
            return head.forward(x);         // [B, T, 20]
        }
    }

    static (float Loss, Dictionary<string, Tensor> Grads) LossAndGrads(bool checkpointed, bool freezeEmbedding)
    {
        // A private generator: tests in other classes draw from the global one in parallel.
        var generator = new Generator(123);
        var model = new TinyStack { Checkpointed = checkpointed };
        using (no_grad())
            foreach (var p in model.parameters()) p.copy_((p.dim() == 1 ? 1.0 : 0.0) + 0.3 * randn(p.shape, generator: generator));
        if (freezeEmbedding) model.Embed.weight!.requires_grad = false;
        var tokens = randint(0, 20, [2, 6], generator: generator);
        var targets = randint(0, 20, [2, 6], generator: generator);
        var logits = model.forward(tokens);
        var loss = nn.functional.cross_entropy(logits.reshape(-1, 20), targets.reshape(-1));
        loss.backward();
        var grads = model.named_parameters().Where(p => p.parameter.requires_grad)
            .ToDictionary(p => p.name, p => p.parameter.grad!.clone());
        return (loss.item<float>(), grads);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]  // LoRA-like: the blocks' input needs no gradient, their parameters do
    public void Checkpointed_blocks_give_the_same_loss_and_gradients(bool freezeEmbedding)
    {
        var (plainLoss, plainGrads) = LossAndGrads(checkpointed: false, freezeEmbedding);
        var (ckptLoss, ckptGrads) = LossAndGrads(checkpointed: true, freezeEmbedding);

        Assert.Equal(plainLoss, ckptLoss);
        Assert.Equal(plainGrads.Keys.Order(), ckptGrads.Keys.Order());
        Assert.Contains("blocks.0.gate.weight", ckptGrads.Keys);
        Assert.Equal(!freezeEmbedding, ckptGrads.ContainsKey("embed.weight"));
        foreach (var (name, expected) in plainGrads)
        {
            var diff = (expected - ckptGrads[name]).abs().max().item<float>();
            Assert.True(diff <= 1e-6f, $"{name}: max |diff| {diff}");
            Assert.True(expected.abs().sum().item<float>() > 0, $"{name} has a gradient");
        }
    }

    [Fact]
    public void Context_tensors_survive_the_callers_dispose_scope()
    {
        var block = new Block("b");
        var input = randn([2, 3, 16], generator: new Generator(9)).requires_grad_();
        Tensor y;
        using (var scope = NewDisposeScope())
        {
            var scale = linspace(0.5, 1.5, 16);  // a per-step tensor, freed when this scope ends
            y = ActivationCheckpoint.Run((x, c) => block.forward(x) * c[0], input, [scale], block.parameters()).MoveToOuterDisposeScope();
        }
        y.square().sum().backward();
        var checkpointed = block.parameters().Select(p => p.grad!.clone()).Append(input.grad!.clone()).ToList();

        foreach (var p in block.parameters()) p.grad = null;
        input.grad = null;
        (block.forward(input) * linspace(0.5, 1.5, 16)).square().sum().backward();
        var plain = block.parameters().Select(p => p.grad!).Append(input.grad!).ToList();
        foreach (var (a, b) in plain.Zip(checkpointed))
            Assert.True((a - b).abs().max().item<float>() <= 1e-6f);
    }

    [Fact]
    public void Context_that_requires_grad_is_rejected()
    {
        var block = new Block("b");
        var input = randn([2, 3, 16], generator: new Generator(10)).requires_grad_();
        var scale = ones(16).requires_grad_();
        var error = Assert.Throws<ArgumentException>(() => ActivationCheckpoint.Run((x, c) => block.forward(x) * c[0], input, [scale], block.parameters()));
        Assert.Contains("must not require grad", error.Message);
    }

    [Fact]
    public void Without_autograd_it_is_the_plain_block()
    {
        var block = new Block("b");
        var x = randn([2, 3, 16], generator: new Generator(5));
        using var noGrad = no_grad();
        var y = ActivationCheckpoint.Run(block.forward, x, block.parameters());
        Assert.True(y.equal(block.forward(x)).all().item<bool>());
        Assert.False(y.requires_grad);
    }

    // The block with dropout on its input, as LoRA applies it.
    sealed class DropoutBlock : nn.Module<Tensor, Tensor>
    {
        readonly Block inner;
        public DropoutBlock(string name) : base(name) { inner = new Block(name + "_inner"); RegisterComponents(); }
        public override Tensor forward(Tensor x) => inner.forward(nn.functional.dropout(x, 0.3, training: true)) + x;
    }

    static (float Loss, List<Tensor> Grads, Tensor After) DropoutRun(bool checkpointed)
    {
        var generator = new Generator(77);
        var blocks = new[] { new DropoutBlock("d0"), new DropoutBlock("d1") };
        using (no_grad())
            foreach (var p in blocks.SelectMany(b => b.parameters())) p.copy_((p.dim() == 1 ? 1.0 : 0.0) + 0.3 * randn(p.shape, generator: generator));
        var input = randn([2, 5, 16], generator: generator).requires_grad_();
        manual_seed(1234);
        var x = input;
        foreach (var b in blocks)
            x = checkpointed ? ActivationCheckpoint.Run(b.forward, x, b.parameters()) : b.forward(x);
        var loss = x.square().mean();
        loss.backward();
        var after = rand([8]);   // where the generator stands after forward and backward
        var grads = blocks.SelectMany(b => b.parameters()).Select(p => p.grad!.clone()).Append(input.grad!.clone()).ToList();
        return (loss.item<float>(), grads, after);
    }

    [Fact]
    public void Dropout_inside_a_checkpointed_block_is_replayed_in_its_rerun()
    {
        var (plainLoss, plainGrads, plainAfter) = DropoutRun(checkpointed: false);
        var (ckptLoss, ckptGrads, ckptAfter) = DropoutRun(checkpointed: true);
        Assert.Equal(plainLoss, ckptLoss);
        foreach (var (a, b) in plainGrads.Zip(ckptGrads))
            Assert.True((a - b).abs().max().item<float>() <= 1e-6f, "gradients with and without checkpointing differ under dropout");
        // The re-run draws no numbers of its own: the generator continues as without checkpointing.
        Assert.True(plainAfter.equal(ckptAfter).all().item<bool>());
    }
}
