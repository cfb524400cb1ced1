"""Which CPU core a new gunicorn worker is pinned to (chatsite.workers.core_for)."""

from chatsite.workers import core_for


def test_each_worker_gets_a_core_of_its_own_lowest_first():
    assert core_for([], 2, cores={0, 1}) == 0
    assert core_for([0], 2, cores={0, 1}) == 1


def test_a_recycled_worker_takes_the_core_its_predecessor_left():
    assert core_for([1], 2, cores={0, 1}) == 0
    assert core_for([0, 2], 3, cores={0, 1, 2, 3}) == 1


def test_the_cores_the_server_may_use_are_the_ones_given():
    assert core_for([], 2, cores={4, 6}) == 4
    assert core_for([4], 2, cores={4, 6}) == 6


def test_more_workers_than_cores_are_left_to_the_operating_system():
    assert core_for([], 3, cores={0, 1}) is None


def test_without_a_core_list_it_reads_the_processs_own(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {3}, raising=False)
    assert core_for([], 1) == 3
