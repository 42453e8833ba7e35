#!/usr/bin/env python3
"""Writes COUNT memory-like JSON files into DEST (used by the benchmarks):

    python3 bench/lib/memories.py DEST COUNT [sensitive]

With "sensitive", about one memory in three also mentions an email address, a
phone number, an IP address or an API key (the anonymization benchmark).
"""
# Memory-like JSON: the shape Ghost writes (timestamp, category, free text,
# a context object), 1-8 KiB, names and mtimes from the timestamps.
import json, os, random, sys, datetime

dest, count = sys.argv[1], int(sys.argv[2])
sensitive = len(sys.argv) > 3 and sys.argv[3] == "sensitive"
rng = random.Random(20250628)
os.makedirs(dest, exist_ok=True)
words = ("the a to of and in that it for on with as was at by from this be or "
         "coffee morning meeting project garden deadline weekend family music walk "
         "prefers remembers mentioned asked planning reminder birthday travel "
         "recipe book chapter workout sleep budget invoice client draft review "
         "python rust server backup photos camera train flight hotel dinner "
         "anniversary doctor appointment medication groceries weather rain sunny "
         "tired excited worried happy quietly usually never always sometimes "
         "because although however therefore instead meanwhile tomorrow yesterday").split()
categories = ["preference", "fact", "event", "project", "relationship", "routine",
              "health", "idea", "reminder", "conversation"]
moods = ["neutral", "happy", "curious", "stressed", "tired", "excited"]
sources = ["chat", "voice", "email-summary", "calendar", "note"]

t = datetime.datetime(2024, 1, 1, 8, 0, 0, tzinfo=datetime.timezone.utc)
for i in range(count):
    t += datetime.timedelta(seconds=rng.randint(30, 7200))
    target = rng.randint(1024, 8192)
    record = {
        "timestamp": t.isoformat().replace("+00:00", "Z"),
        "category": rng.choice(categories),
        "content": "",
        "context": {
            "conversation_id": "%032x" % rng.getrandbits(128),
            "source": rng.choice(sources),
            "mood": rng.choice(moods),
            "confidence": round(rng.uniform(0.4, 1.0), 2),
            "related": ["%016x" % rng.getrandbits(64) for _ in range(rng.randint(0, 4))],
            "tags": rng.sample(words, rng.randint(1, 5)),
        },
    }
    base = len(json.dumps(record, indent=2)) + 1
    sentences = []
    size = 0
    while base + size < target:
        s = " ".join(rng.choice(words) for _ in range(rng.randint(6, 20)))
        s = s[0].upper() + s[1:] + "."
        sentences.append(s)
        size += len(s) + 1
    record["content"] = " ".join(sentences)[: max(0, target - base)]
    if sensitive and rng.random() < 1 / 3:
        values = [
            "anna.%d@example.org" % rng.randint(1, 500),
            "+44 20 7946 %04d" % rng.randint(0, 9999),
            "10.%d.%d.%d" % (rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254)),
            "sk_live_" + "".join(rng.choice("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(24)),
        ]
        record["content"] += " Contact: " + rng.choice(values) + "."
    name = t.strftime("%Y-%m-%dT%H-%M-%S") + ".json"
    path = os.path.join(dest, name)
    with open(path, "w") as f:
        f.write(json.dumps(record, indent=2) + "\n")
    stamp = t.timestamp()
    os.utime(path, (stamp, stamp))
