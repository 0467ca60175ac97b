"""Baseline for the S3 benchmarks: boto3 with 32 threads, signed GETs of the same 1 KiB objects (or,
with a fifth argument `put`, PUTs of 1 KiB bodies).

Prints the requests per second on its last line. Reads the server settings from PANZA_TEST_S3_*.
"""
import os
import sys
import threading
import time

import boto3
import botocore

bucket, prefix, count, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
put = len(sys.argv) > 5 and sys.argv[5] == "put"
body = b'{"text": "' + b"x" * 1000 + b'"}'
threads = 32
client = boto3.client(
    "s3",
    endpoint_url=os.environ["PANZA_TEST_S3_ENDPOINT"],
    region_name="us-east-1",
    aws_access_key_id=os.environ["PANZA_TEST_S3_ACCESS_KEY"],
    aws_secret_access_key=os.environ["PANZA_TEST_S3_SECRET_KEY"],
    config=botocore.config.Config(max_pool_connections=threads),
)
done = [0] * threads
deadline = time.perf_counter() + seconds


def worker(index):
    key = index
    while time.perf_counter() < deadline:
        if put:
            client.put_object(Bucket=bucket, Key=f"{prefix}-put/{key % count}", Body=body, ContentType="application/octet-stream")
        else:
            client.get_object(Bucket=bucket, Key=f"{prefix}/{key % count}")["Body"].read()
        done[index] += 1
        key += 7


start = time.perf_counter()
workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
print(sum(done) / (time.perf_counter() - start))
