"""Checks before a run that moves between machines: where its checkpoints are kept."""

from lion_core.config import parse_config
from lion_core.preflight import file_system_type, store_notes

MOUNTS = """overlay / overlay rw 0 0
/dev/sda1 /scratch ext4 rw 0 0
fs.example:/export /shared nfs4 rw 0 0
gcsfuse /mnt/bucket fuse.gcsfuse rw 0 0
"""


def _cfg(checkpoints: str):
    return parse_config({"storage": {"runs_root": "s3://b/runs", "response_store": "postgresql://lion@db/lion",
                                     "checkpoints_root": checkpoints}})


def test_checkpoints_of_a_run_that_moves_between_machines_must_be_on_a_shared_file_system(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(MOUNTS)
    assert file_system_type("/scratch/ck/run", str(mounts)) == "ext4"
    assert file_system_type("/shared/ck", str(mounts)) == "nfs4" and file_system_type("/sharedx", str(mounts)) == "overlay"
    (note,) = store_notes(_cfg("/scratch/ck"), str(mounts))
    assert note.startswith("storage.checkpoints_root: /scratch/ck is on a local file system (ext4)") and "NFS" in note
    assert store_notes(_cfg("/shared/ck"), str(mounts)) == []
    assert store_notes(_cfg("/mnt/bucket/ck"), str(mounts)) == []
    local_run = parse_config({"storage": {"runs_root": str(tmp_path), "response_store": "postgresql://lion@db/lion"}})
    assert store_notes(local_run, str(mounts)) == []  # one machine's run: its checkpoints may be local
