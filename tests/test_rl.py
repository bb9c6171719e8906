"""Deep RL: the replay buffer, and a short Double DQN run on CartPole-v1 that beats a random policy."""
import importlib.util

import numpy as np
import pytest

from lamina.zoo import rl

# (found, not imported: an xdist worker that only collects this module does not import gymnasium)
pytestmark = pytest.mark.skipif(importlib.util.find_spec("gymnasium") is None,
                                reason="needs gymnasium (pip install gymnasium)")


def test_replay_buffer_rings_and_samples_what_was_added():
    buf = rl.ReplayBuffer(3, 2, seed=0)
    for i in range(5):
        buf.add(np.full(2, i), i % 2, float(i), np.full(2, i + 1), i == 4)
    assert buf.size == 3 and sorted(buf.rewards.tolist()) == [2.0, 3.0, 4.0]   # the oldest two overwritten
    s, a, r, s2, d = buf.sample(50)
    assert set(r.tolist()) <= {2.0, 3.0, 4.0}
    np.testing.assert_array_equal(s[:, 0], r)
    np.testing.assert_array_equal(s2[:, 0], r + 1)
    np.testing.assert_array_equal(d, (r == 4.0).astype(np.float32))


def test_short_dqn_run_beats_a_random_policy(tmp_path):
    import gymnasium as gym
    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(0)
    random_returns = []
    for episode in range(20):
        env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(int(rng.integers(2)))
            total += reward
            done = terminated or truncated
        random_returns.append(total)
    # 2,500 steps (1,500 of them training, after the 1,000 of warm-up): over seeds 0-7 the mean return of the
    # 10 greedy episodes was 144-230 (3,000 steps: 146-208), against a threshold of about 66
    run = rl.train_dqn(total_steps=2500, eval_every=1250, out=str(tmp_path / "dqn"), verbose=0, plot=False,
                       final_episodes=10)
    assert run["mean_return"] > 3 * np.mean(random_returns)    # random play lasts ~22 steps
