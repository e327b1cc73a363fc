"""The peer of bench.cancel_fanout: the official `openai` client in a thread pool.

    python bench/cancel_fanout_peer.py IDS_FILE WIDTH   (OPENAI_BASE_URL, OPENAI_API_KEY set)

Run as a script (not `-m bench...`) so the process imports what such a program
would: the `openai` package and the standard library, nothing of ours. Cancels
every batch id in IDS_FILE (one a line) with `client.batches.cancel`, WIDTH at a
time, persisting nothing; exits 1 if any cancel did not come back `cancelling`.
"""

import sys
from concurrent.futures import ThreadPoolExecutor

import openai


def main() -> int:
    path, width = sys.argv[1], int(sys.argv[2])
    with open(path) as f:
        ids = [line.strip() for line in f if line.strip()]
    client = openai.OpenAI()
    with ThreadPoolExecutor(width) as pool:
        statuses = list(pool.map(lambda i: client.batches.cancel(i).status, ids))
    wrong = [s for s in statuses if s not in ("cancelling", "cancelled")]
    print(f"{len(statuses)} cancelled, {len(wrong)} wrong")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
