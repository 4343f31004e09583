"""Write-once object storage: the contract (base), S3 in AWS, a directory locally."""

from .base import (
    CACHE_CONTROL,
    CONTENT_TYPE,
    NO_STORE,
    PutOutcome,
    ResultStore,
    StoredObject,
    StoreError,
)
from .local import LocalStore
from .memory import MemoryStore
from .s3 import S3Store

__all__ = ["CACHE_CONTROL", "CONTENT_TYPE", "NO_STORE", "LocalStore", "MemoryStore",
           "PutOutcome", "ResultStore", "S3Store", "StoreError", "StoredObject"]
