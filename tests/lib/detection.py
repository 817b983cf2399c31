"""A license-plate detection as a camera sends it, for the compression tests and
benchmark. The seed design names only plate and confidence; the other fields are
what an LPR camera's record usually carries. Records differ the way a stream of
them does: plate, time, box, confidence and sequence change, the rest repeats."""
import json


def record(i=0):
    return {
        "device_id": "cam-gate-02",
        "seq": 100000 + i,
        "timestamp": "2026-12-07T18:%02d:%02d.%03dZ" % (i // 3600 % 60, i // 60 % 60, i * 37 % 1000),
        "plate": "%02d%s%04d" % (10 + i % 89, "가나다라마바사"[i % 7], (i * 7919) % 10000),
        "plate_region": "KR",
        "confidence": round(0.80 + (i * 13 % 20) / 100, 2),
        "bbox": {"x": 412 + i % 50, "y": 288 + i % 30, "w": 176, "h": 44},
        "vehicle": {"type": "car", "color": "white", "make": "hyundai"},
        "lane": 1 + i % 3,
        "direction": "inbound",
        "speed_kmh": 30 + i % 40,
        "image_ref": "img/2026/12/07/cam-gate-02_%06d.jpg" % (100000 + i),
        "model": "lpr-v3.2.1",
    }


def text(i=0):
    return json.dumps(record(i), ensure_ascii=False, separators=(",", ":"))
