"""Faults against real uvicorn servers: SIGKILL during enrolments (20 times), two server processes on one
gallery file, and schemathesis fuzzing of the API from its own OpenAPI schema (bounded: no 5xx)."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from tests.service_util import Server, make_gallery, omniglot_drawings

TOKEN = "fault-token-0123456789abc"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _files(pics: list[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"{i}.png", p, "image/png")) for i, p in enumerate(pics)]


@pytest.mark.slow
def test_sigkill_during_enrolments_loses_no_acknowledged_write(tmp_path: Path, omniglot_dir: Path) -> None:
    from oneshot.gallery import Gallery

    gallery = make_gallery(tmp_path / "kill.gallery", omniglot_dir, calibrate=False)
    pics = [p for ps in omniglot_drawings(omniglot_dir, 8, 2, skip=100).values() for p in ps]
    rng = random.Random(0)
    acknowledged: list[str] = []
    interrupted = 0
    for round_ in range(20):
        srv = Server(gallery).wait()
        stop = threading.Event()
        acked: list[str] = []
        cut = [False]
        odd: list[str] = []

        def stream(
            srv: Server = srv,
            stop: threading.Event = stop,
            round_: int = round_,
            cut: list = cut,
            acked: list = acked,
            odd: list = odd,
        ) -> None:
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                i = 0
                while not stop.is_set():
                    label = f"r{round_:02d}-{i:03d}"
                    two = rng.sample(pics, 2)
                    try:
                        r = c.post("/v1/classes", data={"label": label}, files=_files(two))
                    except httpx.HTTPError:
                        cut[0] = True  # the kill landed while this enrolment was in flight
                        return
                    if r.status_code == 201:
                        acked.append(label)
                    else:
                        odd.append(f"{r.status_code} {r.text}")
                    i += 1

        t = threading.Thread(target=stream)
        t.start()
        t0 = time.monotonic()
        while not acked and not odd and t.is_alive() and time.monotonic() - t0 < 60:
            time.sleep(0.005)  # the first enrolment of a fresh process is slow: kill during the stream after it
        time.sleep(rng.uniform(0.0, 0.25))
        srv.kill()
        stop.set()
        t.join(30)
        assert not odd, odd
        acknowledged += acked
        interrupted += cut[0]
    assert len(acknowledged) >= 20
    assert interrupted >= 10  # most kills hit an enrolment in flight
    with Gallery.open(gallery, create=False) as g:
        assert g.store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        classes = {c.label: c for c in g.list()}
        missing = [lab for lab in acknowledged if lab not in classes]
        assert not missing, f"{len(missing)} acknowledged enrolments lost, e.g. {missing[:3]}"
        rows = dict(
            g.store.conn.execute(
                "SELECT c.label, COUNT(e.id) FROM classes c LEFT JOIN examples e ON e.class_id = c.id GROUP BY c.id"
            )
        )
        for lab, c in classes.items():  # every enrolment is whole: 2 examples, counted and stored
            assert c.n_examples == 2 and rows[lab] == 2, lab
        # the index agrees with the store, and search works
        res = g.identify([pics[0]], k=len(classes))[0]
        assert {m.label for m in res.candidates} == set(classes)


@pytest.mark.slow
def test_two_server_processes_on_one_gallery_lose_no_write(tmp_path: Path, omniglot_dir: Path) -> None:
    gallery = make_gallery(tmp_path / "two.gallery", omniglot_dir, calibrate=False)
    drawings = omniglot_drawings(omniglot_dir, 24, 2, skip=120)
    labels = list(drawings)
    with Server(gallery, token=TOKEN) as s1, Server(gallery, token=TOKEN) as s2:
        servers = [s1, s2]

        def enrol(i: int) -> tuple[int, str]:
            if i < len(labels):  # a new class each, alternating servers
                lab, pics = labels[i], drawings[labels[i]][:1]
            else:  # the same class refined from both servers at once
                lab, pics = "shared", [drawings[labels[i % len(labels)]][1]]
            r = httpx.post(servers[i % 2].url + "/v1/classes", data={"label": lab}, files=_files(pics), headers=AUTH, timeout=60)
            return r.status_code, r.text

        with ThreadPoolExecutor(8) as ex:
            results = list(ex.map(enrol, range(len(labels) + 16)))
        assert all(code == 201 for code, _ in results), [r for r in results if r[0] != 201][:3]
        assert not any("locked" in text for _, text in results)
        for s in servers:  # each process sees every write, its own and the other's
            listing = httpx.get(s.url + "/v1/classes", params={"limit": 1000}).json()
            assert listing["total"] == len(labels) + 1
            assert {c["label"]: c["n_examples"] for c in listing["classes"]}["shared"] == 16
        # a class enrolled through one process is found through the other
        r = httpx.post(s1.url + "/v1/identify", files=_files([drawings[labels[0]][0]]), data={"k": "1"}).json()
        assert r["results"][0]["candidates"][0] == {"label": labels[0], "score": pytest.approx(1.0, abs=1e-4)}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, omniglot_dir: Path):
    gallery = make_gallery(tmp_path_factory.mktemp("fuzz") / "fuzz.gallery", omniglot_dir)
    pics = omniglot_drawings(omniglot_dir, 2, 1, skip=150)
    with Server(gallery, token=TOKEN) as srv:
        for lab, ps in pics.items():
            assert httpx.post(srv.url + "/v1/classes", data={"label": lab}, files=_files(ps), headers=AUTH).status_code == 201
        yield srv


FUZZ_EXAMPLES = 25  # per operation (10 operations)


@pytest.mark.slow
def test_fuzz_the_api_from_its_openapi_schema(fuzz_server: Server) -> None:
    """Requests generated from the service's own OpenAPI schema (with the token, so writes get past auth and
    their bodies are exercised), a bounded number per operation: never a 5xx, and every error is JSON."""
    from hypothesis import given

    schema = schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")
    seen = []
    for result in schema.get_all_operations():
        op = result.ok()

        @settings(
            max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(case=op.as_strategy())
        def one(case) -> None:  # noqa: ANN001
            r = case.call(base_url=fuzz_server.url, headers=AUTH, timeout=30)
            assert r.status_code < 500, f"{case.method} {case.path}: {r.status_code} {r.text[:300]}"
            if r.status_code >= 400:
                err = r.json()["error"]
                assert err["code"] and err["message"]
            seen.append(r.status_code)

        one()
    assert len(seen) >= 100 and any(c < 300 for c in seen) and any(c >= 400 for c in seen)
    assert httpx.get(fuzz_server.url + "/v1/health").status_code == 200
