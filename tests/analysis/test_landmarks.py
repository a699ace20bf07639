"""Tests of ensembles.analysis.landmarks: the landmark choice and the landmark fit."""

import numpy as np
import pytest

from ensembles.analysis import landmarks


def _counts(flat, num_members, num_times):
  return np.bincount(flat // num_times, minlength=num_members)


def test_every_member_gets_an_equal_share_spread_over_its_times():
  valid = np.ones((4, 20), bool)
  flat = landmarks.choose_landmarks(valid, 22)
  assert len(np.unique(flat)) == 22 and np.all(np.diff(flat) > 0)
  np.testing.assert_array_equal(np.sort(_counts(flat, 4, 20)), [5, 5, 6, 6])
  for e in range(4):
    times = flat[flat // 20 == e] % 20
    # Evenly spaced: consecutive landmark times of a member 20/share apart, to rounding.
    assert np.all(np.abs(np.diff(times) - 20 / len(times)) <= 1)


def test_fewer_landmarks_than_members_spread_over_the_sweep_and_over_phases():
  valid = np.ones((100, 10), bool)
  flat = landmarks.choose_landmarks(valid, 10)
  members, times = flat // 10, flat % 10
  assert len(set(members)) == 10 and members[0] == 0 and members[-1] == 99
  np.testing.assert_array_less(np.diff(members), 13)  # evenly spaced through the sweep order
  # One landmark per member, but together they cover early, middle and late training.
  assert times.min() <= 2 and times.max() >= 7 and len(set(times)) >= 6


def test_only_valid_points_are_chosen_and_short_members_give_way():
  valid = np.ones((3, 10), bool)
  valid[0, 2:] = False  # a member with 2 recorded points
  valid[2] = False      # a diverged member
  flat = landmarks.choose_landmarks(valid, 9)
  assert valid.reshape(-1)[flat].all()
  np.testing.assert_array_equal(_counts(flat, 3, 10), [2, 7, 0])
  np.testing.assert_array_equal(landmarks.choose_landmarks(valid, 12), np.r_[0, 1, 10:20])


@pytest.mark.parametrize('num', [0, 13])
def test_landmarks_outside_one_to_the_valid_points_are_an_error(num):
  valid = np.ones((3, 4), bool)
  valid[0, 0] = False
  with pytest.raises(ValueError, match=rf'{num} landmarks: accepted 1..11, the points that can '
                                       'be embedded'):
    landmarks.choose_landmarks(valid, num)
