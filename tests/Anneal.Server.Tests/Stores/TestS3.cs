// A real S3-compatible server for the object-store tests: s3rver (npm, installed by ./test.sh into
// tests/fixtures/node) on a loopback port it picks itself, keeping its objects in a temp folder.
// One per test process, started on first use; every test gets a bucket of its own. The server
// reads its stdin and exits when it closes, so it never outlives the test process.
using System.Diagnostics;
using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;
using Anneal.Server.Storage;

namespace Anneal.Server.Tests.Stores;

public sealed class TestS3
{
    public const string AccessKey = "S3RVER", SecretKey = "S3RVER";   // s3rver's built-in account
    static readonly Lazy<TestS3> Lazy = new(Start, LazyThreadSafetyMode.ExecutionAndPublication);

    public static TestS3 Shared => Lazy.Value;

    public string Endpoint { get; }
    public AmazonS3Client Client { get; }

    TestS3(string endpoint)
    {
        Endpoint = endpoint;
        Client = new AmazonS3Client(new BasicAWSCredentials(AccessKey, SecretKey), new AmazonS3Config
        {
            ServiceURL = endpoint, ForcePathStyle = true, AuthenticationRegion = "us-east-1",
            RequestChecksumCalculation = RequestChecksumCalculation.WHEN_REQUIRED,
            ResponseChecksumValidation = ResponseChecksumValidation.WHEN_REQUIRED,
        });
    }

    public static string FixtureDir
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "Anneal.slnx"))) return Path.Combine(dir.FullName, "tests", "fixtures", "node");
            throw new InvalidOperationException($"no Anneal.slnx above {AppContext.BaseDirectory}");
        }
    }

    /// <summary>A new, empty bucket; the settings for `--object-store s3://bucket/prefix` on it.</summary>
    public ObjectStoreSettings NewBucket(string prefix = "anneal")
    {
        var bucket = "t" + Guid.NewGuid().ToString("n")[..16];
        Client.PutBucketAsync(bucket).GetAwaiter().GetResult();
        return Settings($"s3://{bucket}/{prefix}");
    }

    public ObjectStoreSettings Settings(string url) =>
        new() { Url = url, Endpoint = Endpoint, Region = "us-east-1", AccessKeyId = AccessKey, SecretAccessKey = SecretKey };

    /// <summary>The object's bytes, or null when there is none.</summary>
    public async Task<byte[]?> GetAsync(ObjectStoreSettings settings, string key)
    {
        var (bucket, prefix, _) = ObjectStoreSettings.Parse(settings.Url);
        try
        {
            using var response = await Client.GetObjectAsync(bucket, $"{prefix}/{key}");
            using var buffer = new MemoryStream();
            await response.ResponseStream.CopyToAsync(buffer);
            return buffer.ToArray();
        }
        catch (AmazonS3Exception e) when (e.StatusCode == System.Net.HttpStatusCode.NotFound) { return null; }
    }

    /// <summary>Replaces the object's bytes behind the server's back (a damaged copy), keeping the sha256 it was stored with.</summary>
    public async Task DamageAsync(ObjectStoreSettings settings, string key, byte[] bytes)
    {
        var (bucket, prefix, _) = ObjectStoreSettings.Parse(settings.Url);
        var head = await Client.GetObjectMetadataAsync(bucket, $"{prefix}/{key}");
        var put = new PutObjectRequest { BucketName = bucket, Key = $"{prefix}/{key}", InputStream = new MemoryStream(bytes), UseChunkEncoding = false };
        put.Metadata["sha256"] = head.Metadata["sha256"];
        await Client.PutObjectAsync(put);
    }

    public static bool NodeAvailable { get; } = Probe();

    static bool Probe()
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo("node", "--version") { RedirectStandardOutput = true, UseShellExecute = false });
            if (p is null) return false;
            p.WaitForExit(10_000);
            return p.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception) { return false; }
    }

    static TestS3 Start()
    {
        if (!Directory.Exists(Path.Combine(FixtureDir, "node_modules", "s3rver")))
            throw new InvalidOperationException($"s3rver is not installed in {FixtureDir}; run `npm install --no-audit --no-fund` there (./test.sh does it)");
        var dir = Path.Combine(Path.GetTempPath(), "anneal-s3-" + Guid.NewGuid().ToString("n")[..8]);
        Directory.CreateDirectory(dir);
        const string script = """
            const S3rver = require('s3rver');
            new S3rver({ address: '127.0.0.1', port: 0, silent: false, directory: process.argv[1] }).run()
              .then(({ port }) => console.log('PORT ' + port), e => { console.error(e); process.exit(1); });
            process.stdin.on('end', () => process.exit(0));
            process.stdin.resume();
            """;
        var psi = new ProcessStartInfo("node") { WorkingDirectory = FixtureDir, UseShellExecute = false, RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        // s3rver makes list continuation tokens with DES, which Node's OpenSSL 3 offers only from its legacy provider.
        foreach (var a in new[] { "--openssl-legacy-provider", "-e", script, Path.Combine(dir, "data") }) psi.ArgumentList.Add(a);
        var process = Process.Start(psi)!;
        // Its log (requests, errors) is kept beside its objects while the tests run (ANNEAL_KEEP_S3=1 keeps them after).
        var log = new StreamWriter(Path.Combine(dir, "s3rver.log")) { AutoFlush = true };
        var port = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            if (e.Data.StartsWith("PORT ", StringComparison.Ordinal)) port.TrySetResult(e.Data["PORT ".Length..]);
            lock (log) log.WriteLine(e.Data);
        };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.WriteLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!port.Task.Wait(TimeSpan.FromSeconds(30)))
        {
            process.Kill(true);
            throw new InvalidOperationException($"s3rver did not start within 30 s; see {Path.Combine(dir, "s3rver.log")}");
        }
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try { process.Kill(true); if (Environment.GetEnvironmentVariable("ANNEAL_KEEP_S3") is null) Directory.Delete(dir, recursive: true); }
            catch (Exception e) when (e is InvalidOperationException or IOException) { }
        };
        return new TestS3($"http://127.0.0.1:{port.Task.Result}");
    }
}

/// <summary>A test against the real S3-compatible server: skipped, with a message, only when `node` is not on PATH.</summary>
public sealed class S3FactAttribute : FactAttribute
{
    public S3FactAttribute()
    {
        if (!TestS3.NodeAvailable) Skip = "node is not on PATH: the object-store tests run s3rver from tests/fixtures/node (./test.sh installs it)";
    }
}
