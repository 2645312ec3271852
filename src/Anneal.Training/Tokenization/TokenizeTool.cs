// `anneal tokenize --model <folder> [--chat]`: stdin → JSON token ids (and, with --chat, the
// trained-token mask of one JSONL record). TODO(tokenizer): implement.
namespace Anneal.Training.Tokenization;

public static class TokenizeTool
{
    public static int Run(string modelDir, bool chat, TextReader input, TextWriter output, TextWriter error) =>
        throw new NotImplementedException("TokenizeTool.Run");
}
