"""Write-once object storage: the contract (base), S3 in AWS, a directory locally."""

from .base import CACHE_CONTROL, CONTENT_TYPE, PutOutcome, ResultStore, StoredObject, StoreError
from .local import LocalStore
from .s3 import S3Store

__all__ = ["CACHE_CONTROL", "CONTENT_TYPE", "LocalStore", "PutOutcome", "ResultStore", "S3Store",
           "StoreError", "StoredObject"]
