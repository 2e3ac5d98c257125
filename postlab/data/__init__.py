from postlab.data.batching import PackedBatch, pack, split_micro_batches
from postlab.data.records import (DataError, Encoded, encode_all, encode_record, iter_texts, load_records, read_jsonl,
                                  render_messages, validate_record, write_jsonl)

__all__ = ["DataError", "Encoded", "PackedBatch", "encode_all", "encode_record", "iter_texts", "load_records", "pack",
           "read_jsonl", "render_messages", "split_micro_batches", "validate_record", "write_jsonl"]
