// An S3-compatible bucket as the object store (ObjectStore.cs), through AWSSDK.S3:
//   anneal serve --object-store s3://bucket/prefix [--s3-endpoint URL] [--s3-region R]
// Endpoint, region and credentials are read as the AWS CLI reads them: AWS_ENDPOINT_URL_S3 or
// AWS_ENDPOINT_URL, AWS_REGION or AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
// (/ AWS_SESSION_TOKEN); without keys the SDK's own chain (profiles, instance roles) applies.
// For a non-AWS endpoint (MinIO, Ceph, s3rver…) requests use path-style addressing and checksums
// only where S3 requires them; every body is sent whole (UseChunkEncoding=false) since some
// stores keep aws-chunked framing inside the object. Objects above MultipartThreshold go up in
// PartSize parts read straight from the file, so memory stays flat whatever the size.
using System.Net;
using Amazon.Runtime;
using Amazon.Runtime.Credentials;
using Amazon.S3;
using Amazon.S3.Model;

namespace Anneal.Server.Storage;

/// <summary>`--object-store` and its S3 connection settings (null fields: the AWS environment variables, then the SDK's defaults).</summary>
public sealed record ObjectStoreSettings
{
    /// <summary>s3://bucket or s3://bucket/prefix.</summary>
    public required string Url { get; init; }
    public string? Endpoint { get; init; }
    public string? Region { get; init; }
    public string? AccessKeyId { get; init; }
    public string? SecretAccessKey { get; init; }
    public string? SessionToken { get; init; }
    public long MultipartThreshold { get; init; } = 64L * 1024 * 1024;
    public long PartSize { get; init; } = 32L * 1024 * 1024;

    /// <summary>The settings with every unset field taken from the AWS environment variables.</summary>
    public ObjectStoreSettings WithEnvironment()
    {
        static string? Env(params string[] names) =>
            names.Select(Environment.GetEnvironmentVariable).FirstOrDefault(v => !string.IsNullOrWhiteSpace(v));
        return this with
        {
            Endpoint = Endpoint ?? Env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
            Region = Region ?? Env("AWS_REGION", "AWS_DEFAULT_REGION"),
            AccessKeyId = AccessKeyId ?? Env("AWS_ACCESS_KEY_ID"),
            SecretAccessKey = SecretAccessKey ?? Env("AWS_SECRET_ACCESS_KEY"),
            SessionToken = SessionToken ?? Env("AWS_SESSION_TOKEN"),
        };
    }

    /// <summary>(bucket, prefix without a trailing '/'), or why the URL is not an s3://bucket/prefix.</summary>
    public static (string Bucket, string Prefix, string? Error) Parse(string url)
    {
        const string expected = "expected s3://bucket or s3://bucket/prefix (an S3-compatible bucket; the default store is the data folder)";
        if (!url.StartsWith("s3://", StringComparison.Ordinal)) return ("", "", $"'{url}': {expected}");
        var rest = url["s3://".Length..];
        var slash = rest.IndexOf('/');
        var bucket = slash < 0 ? rest : rest[..slash];
        var prefix = slash < 0 ? "" : rest[(slash + 1)..].Trim('/');
        if (bucket.Length is < 3 or > 63 || !bucket.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c is '-' or '.')
            || !char.IsAsciiLetterOrDigit(bucket[0]) || !char.IsAsciiLetterOrDigit(bucket[^1]))
            return ("", "", $"'{url}': bucket '{bucket}' is not an S3 bucket name (3 to 63 lowercase letters, digits, '-' or '.'); {expected}");
        if (prefix.Contains("//", StringComparison.Ordinal) || prefix.Split('/').Any(p => p is "." or ".."))
            return ("", "", $"'{url}': prefix '{prefix}' has an empty, '.' or '..' part; {expected}");
        return (bucket, prefix, null);
    }

    /// <summary>Why the settings cannot work, naming the flag; null when they look usable.</summary>
    public string? Problem()
    {
        if (Parse(Url).Error is { } error) return $"--object-store {error}";
        if (Endpoint is { } e && (!Uri.TryCreate(e, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https")))
            return $"--s3-endpoint '{e}' (or AWS_ENDPOINT_URL): expected an http:// or https:// address such as http://127.0.0.1:9000";
        if ((AccessKeyId is null) != (SecretAccessKey is null))
            return "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together: set both, or neither to use the AWS SDK's profiles and instance roles";
        if (PartSize < 5L * 1024 * 1024) return $"part size {PartSize} bytes: S3 needs at least 5 MiB per part";
        return null;
    }
}

public sealed class S3ObjectStore : IObjectStore
{
    const string ShaMetadata = "sha256";

    readonly AmazonS3Client _client;
    readonly string _bucket, _prefix;
    readonly ObjectStoreSettings _settings;

    public string Name { get; }
    public bool IsDataFolder => false;

    S3ObjectStore(AmazonS3Client client, string bucket, string prefix, ObjectStoreSettings settings)
    {
        (_client, _bucket, _prefix, _settings) = (client, bucket, prefix, settings);
        Name = prefix.Length == 0 ? $"s3://{bucket}" : $"s3://{bucket}/{prefix}";
    }

    /// <summary>A client for the settings (environment variables already applied); nothing is sent yet.</summary>
    public static S3ObjectStore Create(ObjectStoreSettings s)
    {
        if (s.Problem() is { } problem) throw new ArgumentException(problem);
        var (bucket, prefix, _) = ObjectStoreSettings.Parse(s.Url);
        var config = new AmazonS3Config();
        if (s.Endpoint is { } endpoint)
        {
            config.ServiceURL = endpoint;
            config.AuthenticationRegion = s.Region ?? "us-east-1";
            // Buckets as a path (not a host name) and no optional checksums: what other stores understand.
            config.ForcePathStyle = true;
            config.RequestChecksumCalculation = RequestChecksumCalculation.WHEN_REQUIRED;
            config.ResponseChecksumValidation = ResponseChecksumValidation.WHEN_REQUIRED;
        }
        else config.RegionEndpoint = Amazon.RegionEndpoint.GetBySystemName(s.Region ?? "us-east-1");
        var client = s.AccessKeyId is { } id
            ? new AmazonS3Client(s.SessionToken is { } token ? new SessionAWSCredentials(id, s.SecretAccessKey, token) : new BasicAWSCredentials(id, s.SecretAccessKey), config)
            : new AmazonS3Client(config);
        return new S3ObjectStore(client, bucket, prefix, s);
    }

    /// <summary>Lists one key under the prefix: the bucket exists and the credentials may read it, or an exception saying why not.</summary>
    public Task CheckAsync(CancellationToken ct) => Wrap("list", "", async () =>
    {
        await _client.ListObjectsV2Async(new ListObjectsV2Request { BucketName = _bucket, Prefix = ObjectKey(""), MaxKeys = 1 }, ct);
        return true;
    });

    string ObjectKey(string key) => _prefix.Length == 0 ? key : $"{_prefix}/{key}";
    string KeyOf(string objectKey) => _prefix.Length == 0 ? objectKey : objectKey[(_prefix.Length + 1)..];

    public Task PutAsync(string key, string file, string sha256, CancellationToken ct) => Wrap("put", key, async () =>
    {
        var size = new FileInfo(file).Length;
        if (size <= _settings.MultipartThreshold)
        {
            var put = new PutObjectRequest { BucketName = _bucket, Key = ObjectKey(key), FilePath = file, UseChunkEncoding = false };
            put.Metadata[ShaMetadata] = sha256;
            await _client.PutObjectAsync(put, ct);
            return true;
        }
        var start = new InitiateMultipartUploadRequest { BucketName = _bucket, Key = ObjectKey(key) };
        start.Metadata[ShaMetadata] = sha256;
        var uploadId = (await _client.InitiateMultipartUploadAsync(start, ct)).UploadId;
        try
        {
            var parts = new List<PartETag>();
            for (long position = 0, number = 1; position < size; position += _settings.PartSize, number++)
            {
                var part = await _client.UploadPartAsync(new UploadPartRequest
                {
                    BucketName = _bucket, Key = ObjectKey(key), UploadId = uploadId, PartNumber = (int)number,
                    FilePath = file, FilePosition = position, PartSize = Math.Min(_settings.PartSize, size - position),
                    UseChunkEncoding = false,
                }, ct);
                parts.Add(new PartETag((int)number, part.ETag));
            }
            await _client.CompleteMultipartUploadAsync(new CompleteMultipartUploadRequest
            {
                BucketName = _bucket, Key = ObjectKey(key), UploadId = uploadId, PartETags = parts,
            }, ct);
        }
        catch
        {
            // Parts of an unfinished upload cost storage until aborted.
            try { await _client.AbortMultipartUploadAsync(new AbortMultipartUploadRequest { BucketName = _bucket, Key = ObjectKey(key), UploadId = uploadId }, CancellationToken.None); }
            catch (AmazonServiceException) { }
            catch (HttpRequestException) { }
            throw;
        }
        return true;
    });

    public Task<StoredObject?> HeadAsync(string key, CancellationToken ct) => Wrap("head", key, async () =>
    {
        try
        {
            var head = await _client.GetObjectMetadataAsync(_bucket, ObjectKey(key), ct);
            return new StoredObject(key, head.ContentLength, head.Metadata[ShaMetadata], head.LastModified?.ToUniversalTime() ?? DateTime.UtcNow);
        }
        catch (AmazonS3Exception e) when (e.StatusCode == HttpStatusCode.NotFound) { return null; }
    });

    public Task<bool> GetAsync(string key, string file, CancellationToken ct) => Wrap("get", key, async () =>
    {
        try
        {
            using var response = await _client.GetObjectAsync(_bucket, ObjectKey(key), ct);
            await using var body = response.ResponseStream;
            await using var output = new FileStream(file, DataDirPermissions.NewFile(FileMode.Create, FileAccess.Write, FileOptions.Asynchronous));
            await body.CopyToAsync(output, 81920, ct);
            return true;
        }
        catch (AmazonS3Exception e) when (e.StatusCode == HttpStatusCode.NotFound) { return false; }
    });

    public Task<IReadOnlyList<StoredObject>> ListAsync(string prefix, CancellationToken ct) => Wrap("list", prefix, async () =>
    {
        var found = new List<StoredObject>();
        var request = new ListObjectsV2Request { BucketName = _bucket, Prefix = ObjectKey(prefix) };
        while (true)
        {
            var page = await _client.ListObjectsV2Async(request, ct);
            foreach (var o in page.S3Objects ?? [])
                found.Add(new StoredObject(KeyOf(o.Key), o.Size ?? 0, null, o.LastModified?.ToUniversalTime() ?? DateTime.UtcNow));
            if (page.IsTruncated != true) break;
            request.ContinuationToken = page.NextContinuationToken;
        }
        return (IReadOnlyList<StoredObject>)found;
    });

    public Task DeleteAsync(string key, CancellationToken ct) => Wrap("delete", key, async () =>
    {
        await _client.DeleteObjectAsync(_bucket, ObjectKey(key), ct);
        return true;
    });

    /// <summary>Runs one request; a refusal or an unreachable store becomes an ObjectStoreException naming the store and the key.</summary>
    async Task<T> Wrap<T>(string verb, string key, Func<Task<T>> request)
    {
        try { return await request(); }
        catch (AmazonServiceException e)
        {
            var code = string.IsNullOrEmpty(e.ErrorCode) ? $"HTTP {(int)e.StatusCode}" : e.ErrorCode;
            throw new ObjectStoreException($"object store {Name}: {verb} '{key}' refused: {code}: {e.Message}", e);
        }
        catch (Exception e) when (e is AmazonClientException or HttpRequestException or IOException and not FileNotFoundException)
        {
            throw new ObjectStoreException($"object store {Name}: {verb} '{key}' failed: {e.Message}", e);
        }
    }

    public void Dispose() => _client.Dispose();
}
