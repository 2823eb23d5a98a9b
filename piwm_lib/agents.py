"""Driving agents over HighwayEnv's 5 meta-actions: random, IDM lane-keeper, and an MCTS (UCT) planner."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import env as E
from .validate import NonNegFloat, NonNegInt, PosFloat, PosInt, Prob, check_fields, require

LEFT, IDLE, RIGHT, FASTER, SLOWER = range(5)  # highway-v0's indices; other action sets: action(u, name)


def action(u, name: str) -> int | None:
    """Index of the meta-action `name` in env `u`'s action set (None when it has none: no lane changes at the
    intersection, whose 3 actions are SLOWER 0, IDLE 1, FASTER 2)."""
    return u.action_type.actions_indexes.get(name)


curved = E.on_curves  # on curved roads distances are taken along lanes, not along x


def gap_ahead(u, ego, other) -> float:
    """Distance from `ego` forward to `other` (m): along x on straight roads, along the ego's lane on curved ones."""
    return ego.lane_distance_to(other) if curved(u) else other.position[0] - ego.position[0]


@dataclass(frozen=True)
class AgentConfig:
    """Which agent drives the ego, and its knobs (MCTS values are ours; the paper's budget is not published)."""

    kind: Literal["mcts", "idm", "random"] = "mcts"  # "mcts" | "idm" | "random"
    # random agent
    persistence: Prob = 0.8  # probability of repeating the previous action each frame
    # MCTS (UCT, open-loop over meta-actions, planning on pruned copies of the env)
    budget: PosInt = 16  # tree iterations per decision
    horizon: PosInt = 4  # tree depth in decisions
    discount: Prob = 0.8  # per decision
    decision_frames: PosInt = 5  # recorded frames a tree action lasts (5 at 5 Hz = 1 s); re-plan every this many
    uct_c: NonNegFloat = 1.0  # exploration constant of UCB1
    lookahead_behind_m: NonNegFloat = 30.0  # cars kept in the planning copy: this far behind the ego ...
    lookahead_ahead_m: NonNegFloat = 80.0  # ... to this far ahead
    w_speed: float = 0.4  # reward weight of forward speed (mapped from [20, 30] m/s to [0, 1])
    w_right: float = 0.1  # reward weight of driving in the rightmost lane
    w_lane_change: float = 0.0  # reward added per lane change (negative discourages)
    safety_check: bool = True  # between plans, simulate IDLE ahead each frame and re-plan early if it crashes
    explore: Prob = 0.1  # probability of taking another near-best action (diversity of actions in the data)
    explore_margin: NonNegFloat = 0.05  # an action counts as near-best within this much of the best mean return
    # targets that make the data teach actions (ours): every so many decisions MCTS gets a new random target lane
    # (another lane) or target speed, and a reward for reaching it; it keeps planning for safety (0 = off)
    lane_target_every: NonNegInt = 0  # decisions between new target lanes
    w_target_lane: float = 1.0  # reward weight of being in the target lane
    speed_target_every: NonNegInt = 0  # decisions between new target speeds
    w_target_speed: float = 0.5  # reward weight of driving at the target speed
    target_speeds: tuple[PosFloat, PosFloat] = (20.0, 30.0)  # m/s, range of target speeds (uniform; on curved
    #                                                           scenarios the ego's own range, EnvConfig.ego_speeds)

    def __post_init__(self) -> None:
        check_fields(self)
        lo, hi = self.target_speeds
        require(lo <= hi, f"AgentConfig.target_speeds must be (low, high) with low <= high, got {self.target_speeds}")


class RandomAgent:
    """Uniform random meta-actions that persist with probability `persistence` (cheap, crashes often)."""

    def __init__(self, cfg: AgentConfig, rng: np.random.Generator):
        self.cfg, self.rng, self.prev = cfg, rng, IDLE

    def act(self, u) -> int:
        """Next action for the current state of unwrapped env `u`."""
        if self.rng.random() >= self.cfg.persistence:
            self.prev = int(self.rng.integers(len(u.action_type.actions)))
        return self.prev


class IDMAgent:
    """Lane-keeping with overtaking: slow down behind a slow car, change lane when the next lane is freer."""

    def __init__(self, cfg: AgentConfig, rng: np.random.Generator, safe_gap_m: float = 25.0):
        self.cfg, self.rng, self.safe_gap = cfg, rng, safe_gap_m

    def _gaps(self, u, lane_index) -> tuple[float, float]:
        """Free distance ahead and behind the ego in `lane_index` (inf when no car)."""
        front, rear = u.road.neighbour_vehicles(u.vehicle, lane_index)
        ahead = gap_ahead(u, u.vehicle, front) if front else math.inf
        behind = -gap_ahead(u, u.vehicle, rear) if rear else math.inf
        return ahead, behind

    def act(self, u) -> int:
        """Next action for the current state of unwrapped env `u`."""
        ego = u.vehicle
        if ego.target_lane_index != ego.lane_index:
            return IDLE  # a lane change is under way
        ahead, _ = self._gaps(u, ego.lane_index)
        lanes = min(u.config["lanes_count"], len(u.road.network.graph[ego.lane_index[0]][ego.lane_index[1]]))  # edge's
        if ahead < self.safe_gap:
            for side in ("LANE_LEFT", "LANE_RIGHT") if self.rng.random() < 0.5 else ("LANE_RIGHT", "LANE_LEFT"):
                lane_id = ego.lane_index[2] + (-1 if side == "LANE_LEFT" else 1)
                if action(u, side) is not None and 0 <= lane_id < lanes:
                    a, b = self._gaps(u, (ego.lane_index[0], ego.lane_index[1], lane_id))
                    if a > ahead + 10 and a > self.safe_gap and b > 12:
                        return action(u, side)
            return action(u, "SLOWER")
        if ahead > 2 * self.safe_gap and self.rng.random() < 0.3:
            return action(u, "FASTER")
        return IDLE


class _Node:
    """One node of the open-loop UCT tree (statistics of an action sequence)."""

    __slots__ = ("children", "visits", "value")

    def __init__(self) -> None:
        self.children: dict[int, _Node] = {}
        self.visits = 0
        self.value = 0.0  # sum of returns


class MCTSAgent:
    """UCT (Kocsis & Szepesvari 2006) over meta-actions, simulated on pruned copies of the environment."""

    def __init__(self, cfg: AgentConfig, rng: np.random.Generator):
        self.cfg, self.rng = cfg, rng
        self.frame = 0  # frames since the last plan
        self.plans = 0  # decisions made (for cost reporting)
        self.replans = 0  # early plans triggered by the safety check
        self.target_lane: int | None = None  # lane the reward pulls towards (lane_target_every > 0)
        self.target_speed: float | None = None  # speed the reward pulls towards (speed_target_every > 0)

    def act(self, u) -> int:
        """Plan every `decision_frames` frames, or at once when IDLE is foreseen to crash; else IDLE."""
        c = self.cfg
        due = self.frame % c.decision_frames == 0
        if not due and c.safety_check:
            due = E.simulate(E.planning_copy(u, c.lookahead_behind_m, c.lookahead_ahead_m), IDLE, c.decision_frames)
            self.replans += int(due)
        if not due:
            self.frame += 1
            return IDLE
        self.frame = 1
        return self.plan(u)

    def plan(self, u) -> int:
        """Run `budget` UCT iterations from the current state and return the chosen action."""
        c = self.cfg
        self._draw_targets(u)
        root_state = E.planning_copy(u, c.lookahead_behind_m, c.lookahead_ahead_m)
        root = _Node()
        for _ in range(c.budget):
            self._iterate(root, E.planning_copy(root_state, math.inf, math.inf))
        self.plans += 1
        means = {a: n.value / n.visits for a, n in root.children.items() if n.visits}
        best = max(root.children, key=lambda a: (root.children[a].visits, means.get(a, -math.inf)))
        if self.rng.random() < c.explore:
            near = sorted(a for a, m in means.items() if m >= means[best] - c.explore_margin)
            best = int(self.rng.choice(near))
        return int(best)

    def _draw_targets(self, u) -> None:
        """New target lane (another lane than the ego's) / target speed every so many decisions."""
        c = self.cfg
        lanes = u.config["lanes_count"]
        if c.lane_target_every and curved(u):
            raise ValueError("AgentConfig.lane_target_every needs a straight road (lane numbers change along curved "
                             "roads): set it 0 on roundabout-v0 and intersection-v0")
        if c.lane_target_every and self.plans % c.lane_target_every == 0 and lanes > 1:
            others = [k for k in range(lanes) if k != u.vehicle.lane_index[2]]
            self.target_lane = int(self.rng.choice(others))
        if c.speed_target_every and self.plans % c.speed_target_every == 0:
            speeds = u.config["action"]["target_speeds"]  # curved scenarios: their own range (roundabout 0-16 m/s)
            self.target_speed = float(self.rng.uniform(*((min(speeds), max(speeds)) if curved(u) else c.target_speeds)))

    def _iterate(self, root: _Node, sim) -> None:
        """One selection-expansion-rollout-backup pass; `sim` is a disposable planning copy."""
        c = self.cfg
        path, ret, disc, depth, node, done = [root], 0.0, 1.0, 0, root, False
        expanded, n_actions = False, len(sim.action_type.actions)
        while depth < c.horizon and not done:
            if not expanded:
                untried = [a for a in range(n_actions) if a not in node.children]
                if untried:
                    action = int(self.rng.choice(untried))
                    node.children[action] = _Node()
                    expanded = True
                else:
                    action = self._ucb(node)
                node = node.children[action]
                path.append(node)
            else:
                action = self._rollout_action(sim)
            r, done = self._reward_step(sim, action)
            ret += disc * r
            disc *= c.discount
            depth += 1
        if done:  # a crash is absorbing: -1 for every remaining decision of the horizon
            ret -= sum(disc * c.discount**k for k in range(c.horizon - depth))
        for n in path:
            n.visits += 1
            n.value += ret

    def _rollout_action(self, sim) -> int:
        """Default policy after expansion: brake when closing in on the car ahead (within 1.5 s), else IDLE."""
        ego = sim.vehicle
        front, _ = sim.road.neighbour_vehicles(ego, ego.lane_index)
        if front is not None and front.speed < ego.speed and gap_ahead(sim, ego, front) < 1.5 * ego.speed:
            return action(sim, "SLOWER")
        return IDLE

    def _ucb(self, node: _Node) -> int:
        """UCB1 choice among the children of a fully expanded node."""
        logn = math.log(node.visits + 1)
        scores = {a: ch.value / ch.visits + self.cfg.uct_c * math.sqrt(logn / ch.visits)
                  for a, ch in node.children.items()}
        return max(scores, key=scores.get)

    def _reward_step(self, sim, action: int) -> tuple[float, bool]:
        """Apply `action` for one decision on the copy; reward in [0, 1] (speed, right lane), -1 on crash."""
        c = self.cfg
        lane_before = sim.vehicle.target_lane_index[2]
        if E.simulate(sim, action, c.decision_frames):
            return -1.0, True
        ego = sim.vehicle
        if curved(sim):  # the ego's own speed range (roundabout 0-16 m/s), along its route
            lo, hi = min(sim.config["action"]["target_speeds"]), max(sim.config["action"]["target_speeds"])
            speed = float(np.clip((ego.speed - lo) / max(hi - lo, 1e-6), 0.0, 1.0))
        else:  # forward speed, mapped from [20, 30] m/s
            speed = float(np.clip((ego.speed * math.cos(ego.heading) - 20.0) / 10.0, 0.0, 1.0))
        lanes = sim.config["lanes_count"]
        right = ego.lane_index[2] / max(lanes - 1, 1)
        terms = [(c.w_speed, speed), (c.w_right, right)]
        if self.target_lane is not None:
            terms.append((c.w_target_lane, 1.0 - abs(ego.lane_index[2] - self.target_lane) / max(lanes - 1, 1)))
        if self.target_speed is not None:
            terms.append((c.w_target_speed, 1.0 - min(abs(ego.speed - self.target_speed) / 10.0, 1.0)))
        changed = float(ego.target_lane_index[2] != lane_before)
        score = sum(w * v for w, v in terms) / sum(w for w, _ in terms)
        return score + c.w_lane_change * changed, False


def make_agent(cfg: AgentConfig, rng: np.random.Generator):
    """Build the agent named by `cfg.kind`, drawing all its randomness from `rng`."""
    return {"mcts": MCTSAgent, "idm": IDMAgent, "random": RandomAgent}[cfg.kind](cfg, rng)
