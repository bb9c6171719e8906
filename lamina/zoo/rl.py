"""Deep reinforcement learning: Double DQN (Mnih et al. 2015; van Hasselt et al. 2016) on CartPole-v1.

    pip install 'lamina[rl]'       # gymnasium
    lamina train dqn               # mean return of 100 greedy episodes, learning curve PNG

The agent learns Q(s, a), the return expected from taking action a in state s and acting well afterwards,
with a small MLP. Experience (s, a, r, s', done) goes into a replay buffer; each step trains on a random
minibatch of it (breaking the correlation of consecutive steps) towards r + gamma * Q_target(s', argmax_a
Q(s', a)) - the online network picks the next action, a slowly updated copy (the target network) values it,
which keeps the targets from chasing themselves. Actions are epsilon-greedy with epsilon decaying from 1.
Every ``eval_every`` steps a few greedy episodes are played and the best weights so far are kept.
"""
import os
import time

import numpy as np

from .. import backend, layers, optimizers
from ..models import Sequential
from . import common

__all__ = ["ReplayBuffer", "q_network", "train_dqn", "evaluate_policy", "RECIPES"]


def _gym():
    try:
        import gymnasium
    except ImportError:
        raise ImportError("The DQN recipe needs gymnasium: pip install 'lamina[rl]'") from None
    return gymnasium


class ReplayBuffer:
    """A fixed-size ring of transitions, sampled uniformly."""

    def __init__(self, capacity, state_size, seed=0):
        self.capacity, self.size, self._next = int(capacity), 0, 0
        self.states = np.zeros((self.capacity, state_size), np.float32)
        self.next_states = np.zeros((self.capacity, state_size), np.float32)
        self.actions = np.zeros(self.capacity, np.int64)
        self.rewards = np.zeros(self.capacity, np.float32)
        self.dones = np.zeros(self.capacity, np.float32)
        self.rng = np.random.default_rng(seed)

    def add(self, state, action, reward, next_state, done):
        i = self._next
        self.states[i], self.actions[i], self.rewards[i] = state, action, reward
        self.next_states[i], self.dones[i] = next_state, float(done)
        self._next = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size):
        idx = self.rng.integers(0, self.size, size=batch_size)
        return self.states[idx], self.actions[idx], self.rewards[idx], self.next_states[idx], self.dones[idx]


def q_network(state_size=4, num_actions=2, hidden=128):
    """State -> one Q value per action."""
    return Sequential([layers.Input((state_size,)), layers.Dense(hidden, activation="relu"),
                       layers.Dense(hidden, activation="relu"), layers.Dense(num_actions)], name="q_network")


def evaluate_policy(model, episodes=100, seed=10_000, env_id="CartPole-v1"):
    """Returns of `episodes` greedy episodes (each a fresh seeded reset), played in lock-step: one batched
    forward pass per time step for all episodes still running."""
    gym = _gym()
    envs = [gym.make(env_id) for _ in range(episodes)]
    states = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
    returns = np.zeros(episodes)
    running = np.ones(episodes, bool)
    while running.any():
        idx = np.flatnonzero(running)
        actions = model.predict_on_batch(states[idx]).argmax(axis=1)
        for i, a in zip(idx, actions):          # the environments are Python objects: one step call each
            s, r, terminated, truncated, _ = envs[i].step(int(a))
            states[i] = s
            returns[i] += r
            running[i] = not (terminated or truncated)
    for env in envs:
        env.close()
    return returns


def train_dqn(epochs=None, batch_size=None, out=None, seed=0, verbose=2, total_steps=None, plot=True,
              gamma=0.99, buffer_size=50_000, warmup=1_000, epsilon_decay_steps=10_000, target_tau=0.005,
              eval_every=5_000, eval_episodes=10, final_episodes=100):
    """Train Double DQN on CartPole-v1 and report the mean return of `final_episodes` greedy episodes
    (the maximum is 500). `epochs` counts thousands of environment steps (default: the recipe's)."""
    gym = _gym()
    r = RECIPES["dqn"]
    total_steps = total_steps or 1000 * (epochs or r.epochs)
    batch_size = batch_size or r.batch_size
    out = out or os.path.join("runs", r.name)
    backend.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    env = gym.make("CartPole-v1")
    state, _ = env.reset(seed=seed)
    online, target = q_network(), q_network()
    online.compile(optimizer=optimizers.Adam(r.learning_rate), loss="huber")
    target.set_weights(online.get_weights())
    buffer = ReplayBuffer(buffer_size, state.shape[0], seed=seed)
    common.say(verbose, f"Training '{r.name}' ({r.description}): {total_steps} environment steps, batch size "
                         f"{batch_size}, seed {seed}.")
    start = time.perf_counter()
    history = {"episode_return": [], "eval_step": [], "eval_return": []}
    best, best_weights, episode_return, index = -1.0, online.get_weights(), 0.0, np.arange(batch_size)
    for step in range(1, total_steps + 1):
        epsilon = max(0.05, 1.0 - step / epsilon_decay_steps)
        if rng.random() < epsilon:
            action = int(rng.integers(2))
        else:
            action = int(online.predict_on_batch(state[None].astype(np.float32))[0].argmax())
        next_state, reward, terminated, truncated, _ = env.step(action)
        buffer.add(state, action, reward, next_state, terminated)   # a time-limit cut is not a true end
        episode_return += reward
        state = next_state
        if terminated or truncated:
            history["episode_return"].append(episode_return)
            episode_return = 0.0
            state, _ = env.reset()
        if buffer.size >= warmup:
            s, a, rew, s2, done = buffer.sample(batch_size)
            # the online network on s and s2 in one batch (one call's overhead instead of two; row by row the
            # same numbers)
            both = online.predict_on_batch(np.concatenate([s, s2]))
            q, next_online = both[:batch_size], both[batch_size:].argmax(axis=1)   # Double DQN: online picks,
            next_value = target.predict_on_batch(s2)[index, next_online]           # target values
            q[index, a] = rew + gamma * (1.0 - done) * next_value
            online.train_on_batch(s, q)
            # soft target update: target <- tau * online + (1 - tau) * target
            for wt, wo in zip(target.weights, online.weights):
                wt.assign(wt.numpy() * (1 - target_tau) + wo.numpy() * target_tau)
        if step % eval_every == 0 or step == total_steps:
            score = float(evaluate_policy(online, eval_episodes, seed=seed * 1000 + step).mean())
            history["eval_step"].append(step)
            history["eval_return"].append(score)
            if score >= best:
                best, best_weights = score, online.get_weights()
            common.say(verbose if verbose >= 2 else 0,
                        f"step {step}: greedy return {score:.1f} over {eval_episodes} episodes (best {best:.1f}), "
                        f"epsilon {epsilon:.2f}")
    env.close()
    seconds = time.perf_counter() - start
    online.set_weights(best_weights)
    returns = evaluate_policy(online, final_episodes, seed=10_000 + seed)
    run = {"model": r.name, "dataset": r.dataset, "total_steps": total_steps, "batch_size": batch_size,
           "seed": seed, "mean_return": float(returns.mean()), "min_return": float(returns.min()),
           "episodes": final_episodes, "train_seconds": round(seconds, 2), "params": int(online.count_params())}
    common.say(verbose, f"Mean return of {final_episodes} greedy episodes: {returns.mean():.1f} (of 500; min "
                         f"{returns.min():.0f}); {seconds:.1f} s of training.")
    curves = {"episode_return": history["episode_return"]}
    common.save_run(out, {"model.lamina": online}, {}, run, verbose)
    if plot:
        _plot(curves, history, os.path.join(out, "learning_curve.png"), verbose)
    return run


def _plot(curves, history, path, verbose):
    try:
        from ..plotting import _pyplot, save_figure
        plt = _pyplot()
    except ImportError:
        return
    returns = np.asarray(curves["episode_return"])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(np.arange(1, len(returns) + 1), returns, alpha=0.35, label="training episodes (epsilon-greedy)")
    if len(returns) >= 20:
        ax.plot(np.arange(20, len(returns) + 1), np.convolve(returns, np.ones(20) / 20, "valid"),
                label="moving average of 20")
    ax.set_xlabel("episode")
    ax.set_ylabel("return")
    ax.set_title("DQN on CartPole-v1")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=90, close=True)
    common.say(verbose, f"Saved {path}")


RECIPES = {r.name: r for r in [
    common.LoopRecipe("dqn", lambda input_shape=(4,), num_classes=2: q_network(input_shape[0], num_classes),
                       "cartpole", 50, 64, 1e-3,
                       "Double DQN with replay and a target network on gymnasium's CartPole-v1 (needs lamina[rl])",
                       train_dqn),
]}

common.OTHER_DATASETS.setdefault("cartpole", "gymnasium's CartPole-v1 environment (pip install 'lamina[rl]')")
common.RECIPES.update({k: v for k, v in RECIPES.items() if k not in common.RECIPES})
