"""Write-once objects in S3, with conditional writes."""

from __future__ import annotations

from email.utils import formatdate

from .base import (
    CACHE_CONTROL,
    CONTENT_TYPE,
    NO_STORE,
    PutOutcome,
    StoredObject,
    StoreError,
    md5_etag,
    winner,
)


class S3Store:
    """Results in S3, written with ``If-None-Match: *`` (conditional write).

    botocore's standard retry mode retries throttling, 5xx and connection errors with
    backoff; the endpoint comes from boto3's own ``AWS_ENDPOINT_URL_S3`` when set.
    """

    def __init__(self, bucket: str, client=None, *, max_attempts: int = 4,
                 connect_timeout: float = 2.0, read_timeout: float = 5.0) -> None:
        self.bucket = bucket
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                config=Config(
                    retries={"mode": "standard", "total_max_attempts": max_attempts},
                    connect_timeout=connect_timeout,
                    read_timeout=read_timeout,
                    signature_version="s3v4",  # presigned PUTs must sign headers (SigV4)
                ),
            )
        self.client = client

    def get(self, key: str) -> StoredObject | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
            body = resp["Body"].read()
        except ClientError as exc:
            # Without s3:ListBucket (least privilege: Get/Put on results/* only) S3 answers
            # a missing key with 403 instead of 404, so both mean "not stored yet". A real
            # permission fault then shows up where it matters: the put fails loudly.
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "AccessDenied",
                                                              "403"):
                return None
            raise StoreError(f"S3 get {key}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"S3 get {key}: {exc}") from exc
        modified = resp.get("LastModified")
        return StoredObject(
            body,
            resp.get("ETag", md5_etag(body)),
            resp.get("ContentType", CONTENT_TYPE),
            resp.get("CacheControl", CACHE_CONTROL),
            formatdate(modified.timestamp(), usegmt=True) if modified else None,
        )

    def put(self, key: str, body: bytes, content_type: str = CONTENT_TYPE,
            cache_control: str = NO_STORE) -> StoredObject:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.client.put_object(Bucket=self.bucket, Key=key, Body=body,
                                          ContentType=content_type, CacheControl=cache_control)
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"S3 put {key}: {exc}") from exc
        return StoredObject(body, resp.get("ETag", md5_etag(body)), content_type, cache_control)

    def presign_put(self, key: str, *, content_type: str, length: int, sha256_b64: str,
                    expires_in: int) -> tuple[str, dict[str, str]]:
        """A presigned PUT that signs the type, the length and the SHA-256 (S3 refuses a body
        with another hash: 400 BadDigest), with the headers the client must send exactly."""
        url = self.client.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": key, "ContentType": content_type,
                    "ContentLength": length, "ChecksumSHA256": sha256_b64},
            ExpiresIn=expires_in, HttpMethod="PUT",
        )
        headers = {"Content-Type": content_type, "Content-Length": str(length),
                   "x-amz-checksum-sha256": sha256_b64}
        return url, headers

    def put_if_absent(self, key: str, body: bytes, content_type: str = CONTENT_TYPE,
                      cache_control: str = CACHE_CONTROL) -> PutOutcome:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*",
                ContentType=content_type, CacheControl=cache_control,
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            # 412: someone stored it first; 409: a concurrent conditional write is in flight
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (
                409, 412,
            ):
                return winner(self, key)
            raise StoreError(f"S3 put {key}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"S3 put {key}: {exc}") from exc
        return PutOutcome(StoredObject(body, resp.get("ETag", md5_etag(body)), content_type,
                                       cache_control), created=True)
