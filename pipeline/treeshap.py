"""Path-dependent TreeSHAP for LightGBM as a sum over leaves with precomputed tables (the Fast TreeSHAP v2 idea).

For one tree, LightGBM's `pred_contrib` value function is v(S) = sum over leaves l of value_l * prod_{j in P_l ∩ S}
a_lj(x) * prod_{j in P_l \\ S} r_lj, where P_l are the distinct features split on along the root->l path, a_lj(x) is 1
when x follows the path at every split on j and r_lj the product of child/parent data counts at those splits. Each
leaf is a small product game whose Shapley values depend on x only through the bitmask of {j : a_lj = 1}, so a table
of its |P_l| values for each of the 2^|P_l| masks is built once per model. Sibling leaves and other small subtrees are
merged into one table indexed by the mask at the subtree's root plus the decisions inside it, so a row costs one
comparison per internal node and one table row per subtree instead of LightGBM's O(depth^2) work per leaf.

Trees the tables cannot represent (categorical splits, more than MAX_PATH_FEATURES distinct features on a path, over
the memory budget) go through LightGBM's own `pred_contrib` for just those iterations, and models they cannot
represent at all (linear trees, averaged output, pandas categoricals, non-numeric columns) through it entirely: the
numbers always equal `pred_contrib`'s up to float rounding.
"""

from __future__ import annotations

import json
import math
import weakref
from dataclasses import dataclass, field

import lightgbm as lgb
import numba
import numpy as np
import pandas as pd

# LightGBM's kZeroThreshold (the float literal 1e-35f): dense predict input within it is dropped, i.e. read as 0,
# and missing_type 'Zero' treats it as missing
_KZERO = float(np.float32(1e-35))
# a leaf's table is 2^|P| x |P| doubles: 14 distinct features on one path is 1.8 MB for that leaf
MAX_PATH_FEATURES = 14
# a merged subtree's table is 2^(|Q| + its internal nodes) x (its features) doubles: at most 2^12 x 12 (390 KB); on
# the product's model (106 trees x 31 leaves, 47 features) 12 bits gave ~5.2k table reads per row against 17k for
# leaves alone, 46 MiB of tables, ~0.2 s to build on a loaded machine; 13 bits was no faster and 64 MiB
MAX_UNIT_BITS = 12
MAX_TABLE_BYTES = 512 * 2**20


@numba.njit(cache=True, nogil=True)
def _goes_left(x: float, thr: float, missing: int, default_left: bool) -> bool:
    """LightGBM's Tree::NumericalDecision on a float64 input (missing: 0 None, 1 Zero, 2 NaN)."""
    if abs(x) <= _KZERO:
        x = 0.0  # the dense-row reader drops |x| <= kZeroThreshold, so the tree sees exactly 0
    if missing != 2 and math.isnan(x):
        x = 0.0
    if (missing == 1 and x == 0.0) or (missing == 2 and math.isnan(x)):
        return default_left
    return x <= thr


@numba.njit(cache=True, nogil=True)
def _leaf_table(r: np.ndarray, value: float, out: np.ndarray) -> None:
    """Shapley values of one leaf's product game for every mask of its path features (out: 2^d x d, flattened).

    For mask A (the features x follows) and B its complement, a coalition holding a feature of B vanishes, so
    phi_i = -value R_B G(A) for i in B and value (1 - r_i) R_B G(A - {i}) for i in A, where R_B = prod_B r_j and
    G(C) = sum over S in C of w(|S|) prod_{C - S} r_j = sum_s w(s) e_{|C|-s}(r_C), with w the Shapley weights.
    """
    d = r.shape[0]
    # w[s] = s! (d-s-1)! / d!, the Shapley weight of a coalition of s of the other d-1 players
    w = np.empty(d)
    for s in range(d):
        w[s] = math.exp(math.lgamma(s + 1) + math.lgamma(d - s) - math.lgamma(d + 1))
    full = (1 << d) - 1
    # poly[C] = prod_{j in C} (t + r_j) by coefficient of t^s (so e_{|C|-s}); prod[C] = prod_{j in C} r_j; each
    # from C minus its lowest bit, so every mask costs O(d) and the table O(2^d d)
    poly = np.zeros((1 << d, d + 1))
    prod = np.empty(1 << d)
    g = np.empty(1 << d)
    size = np.zeros(1 << d, np.int64)
    poly[0, 0] = 1.0
    prod[0] = 1.0
    g[0] = w[0]
    for c in range(1, 1 << d):
        rest = c & (c - 1)
        j = 0
        while not (c >> j) & 1:
            j += 1
        n = size[rest]
        size[c] = n + 1
        prod[c] = prod[rest] * r[j]
        poly[c, n + 1] = poly[rest, n]
        for k in range(n, 0, -1):
            poly[c, k] = poly[rest, k - 1] + r[j] * poly[rest, k]
        poly[c, 0] = r[j] * poly[rest, 0]
        acc = 0.0
        for s in range(min(n + 1, d - 1) + 1):
            acc += w[s] * poly[c, s]
        g[c] = acc
    for mask in range(1 << d):
        rb = value * prod[full & ~mask]
        for i in range(d):
            if (mask >> i) & 1:
                out[mask * d + i] = (1.0 - r[i]) * rb * g[mask & ~(1 << i)]
            else:
                out[mask * d + i] = -rb * g[mask]


@numba.njit(cache=True, parallel=True, nogil=True)
def _unit_tables(
    leaf_depth: np.ndarray,
    leaf_off: np.ndarray,
    leaf_r: np.ndarray,
    leaf_value: np.ndarray,
    unit_qbits: np.ndarray,
    unit_ndec: np.ndarray,
    unit_nfeat: np.ndarray,
    unit_table_off: np.ndarray,
    unit_member_start: np.ndarray,
    unit_members: np.ndarray,
    member_leaf: np.ndarray,
    member_step_off: np.ndarray,
    member_steps: np.ndarray,
    member_map_off: np.ndarray,
    step_dec: np.ndarray,
    step_pos: np.ndarray,
    step_left: np.ndarray,
    member_map: np.ndarray,
    max_leaf_table: int,
    table: np.ndarray,
) -> None:
    """Fill each unit's table: per state (root mask bits, then decision bits), the sum of its leaves' tables."""
    for u in numba.prange(unit_qbits.shape[0]):
        q = unit_qbits[u]
        nb = q + unit_ndec[u]
        nf = unit_nfeat[u]
        off = unit_table_off[u]
        low_q = (1 << q) - 1
        first = unit_member_start[u]
        if unit_members[u] == 1 and member_steps[first] == 0:
            # a lone leaf: its table is the unit's (its features in path order)
            lf = member_leaf[first]
            d = leaf_depth[lf]
            _leaf_table(leaf_r[leaf_off[lf] : leaf_off[lf] + d], leaf_value[lf], table[off : off + (d << d)])
            continue
        buf = np.empty(max_leaf_table)
        for mm in range(first, first + unit_members[u]):
            lf = member_leaf[mm]
            d = leaf_depth[lf]
            lt = buf[: d << d]
            _leaf_table(leaf_r[leaf_off[lf] : leaf_off[lf] + d], leaf_value[lf], lt)
            so = member_step_off[mm]
            h = member_steps[mm]
            mo = member_map_off[mm]
            # the leaf's table row depends on the root's mask bits and the decisions on its own path only: one
            # lookup per such sub-state, added into every state that agrees on them (the other decisions free)
            path_bits = 0
            for k in range(so, so + h):
                path_bits |= 1 << step_dec[k]
            free = ((1 << (nb - q)) - 1) & ~path_bits
            for z in range(1 << (q + h)):
                # bits above the root's start at 1 and are cleared where x leaves the path
                m = (z & low_q) | ~low_q
                s0 = z & low_q
                for k in range(h):
                    went = (z >> (q + k)) & 1
                    s0 |= went << (q + step_dec[so + k])
                    if went != step_left[so + k]:
                        m &= ~(1 << step_pos[so + k])
                row = lt[(m & ((1 << d) - 1)) * d :]
                sub = free
                while True:
                    base = off + (s0 | (sub << q)) * nf
                    for i in range(d):
                        table[base + member_map[mo + i]] += row[i]
                    if sub == 0:
                        break
                    sub = (sub - 1) & free


@numba.njit(cache=True, parallel=True, nogil=True)
def _shap_kernel(
    Xt: np.ndarray,
    tree_node_start: np.ndarray,
    tree_internal: np.ndarray,
    tree_nodes: np.ndarray,
    tree_unit_start: np.ndarray,
    tree_units: np.ndarray,
    node_feat: np.ndarray,
    node_thr: np.ndarray,
    node_missing: np.ndarray,
    node_default_left: np.ndarray,
    node_left: np.ndarray,
    node_right: np.ndarray,
    node_pos: np.ndarray,
    unit_node: np.ndarray,
    unit_qbits: np.ndarray,
    unit_dec_off: np.ndarray,
    unit_ndec: np.ndarray,
    dec_node: np.ndarray,
    unit_nfeat: np.ndarray,
    unit_feat_off: np.ndarray,
    unit_feats: np.ndarray,
    unit_table_off: np.ndarray,
    table: np.ndarray,
    chunk: int,
    outt: np.ndarray,
) -> None:
    """Add every tree's SHAP values of the columns of Xt (features x rows) into outt (features x rows)."""
    n = Xt.shape[1]
    n_chunks = (n + chunk - 1) // chunk
    max_nodes = 1
    max_internal = 1
    for t in range(tree_node_start.shape[0]):
        max_nodes = max(max_nodes, tree_nodes[t])
        max_internal = max(max_internal, tree_internal[t])
    for c in numba.prange(n_chunks):
        lo = c * chunk
        hi = min(n, lo + chunk)
        w = hi - lo
        mask = np.empty((max_nodes, w), np.int32)
        dec = np.empty((max_internal, w), np.int32)
        idx = np.empty(w, np.int64)
        # trees outside, rows inside: a tree's tables stay in cache for the whole chunk
        for t in range(tree_node_start.shape[0]):
            s = tree_node_start[t]
            mask[0, :] = -1  # every bit starts at 1 and is cleared where x leaves the path
            for k in range(tree_internal[t]):  # internal nodes: parents before children
                g = s + k
                xs = Xt[node_feat[g], lo:hi]
                thr = node_thr[g]
                miss = node_missing[g]
                dl = node_default_left[g]
                bit = np.int32(1) << np.int32(node_pos[g])
                parent = mask[k]
                left = mask[node_left[g]]
                right = mask[node_right[g]]
                went = dec[k]
                for r in range(w):
                    m = parent[r]
                    if _goes_left(xs[r], thr, miss, dl):
                        left[r] = m
                        right[r] = m & ~bit
                        went[r] = 1
                    else:
                        left[r] = m & ~bit
                        right[r] = m
                        went[r] = 0
            for u in range(tree_unit_start[t], tree_unit_start[t] + tree_units[t]):
                q = unit_qbits[u]
                low = (np.int32(1) << np.int32(q)) - np.int32(1)
                um = mask[unit_node[u]]
                for r in range(w):
                    idx[r] = um[r] & low
                for j in range(unit_ndec[u]):
                    dj = dec[dec_node[unit_dec_off[u] + j]]
                    for r in range(w):
                        idx[r] |= np.int64(dj[r]) << (q + j)
                nf = unit_nfeat[u]
                to = unit_table_off[u]
                for r in range(w):
                    idx[r] = to + idx[r] * nf  # the start of this row's table row
                fo = unit_feat_off[u]
                for i in range(nf):
                    o = outt[unit_feats[fo + i]]
                    for r in range(w):
                        o[lo + r] += table[idx[r] + i]


class _Unsupported(Exception):
    """A tree the tables cannot represent (it goes through pred_contrib)."""


@dataclass
class _Unit:
    """A subtree with one table: root node, its path features Q, decision nodes, features and member leaves."""

    node: int
    qbits: int
    decs: list[int]
    feats: list[int]
    # per member leaf: (leaf index in the tree, [(decision index, bit position, went left)], leaf position -> unit slot)
    members: list[tuple[int, list[tuple[int, int, int]], list[int]]] = field(default_factory=list)

    def doubles(self) -> int:
        """Size of the table in doubles."""
        return len(self.feats) << (self.qbits + len(self.decs))


@dataclass
class _Tree:
    """One tree: internal nodes in LightGBM's order (parents first), leaf k as node n_internal + k."""

    feat: list[int]
    thr: list[float]
    missing: list[int]
    default_left: list[bool]
    left: list[int]
    right: list[int]
    pos: list[int]
    leaf_value: list[float]
    leaf_feats: list[list[int]]
    leaf_r: list[list[float]]
    units: list[_Unit]

    def doubles(self) -> int:
        """Size of the tree's tables in doubles."""
        return sum(u.doubles() for u in self.units)


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split()]


def _floats(s: str) -> list[float]:
    return [float(v) for v in s.split()]


def _parse_model(text: str) -> tuple[dict[str, str], list[dict[str, str]], list | None]:
    """Header, per-tree key=value blocks and pandas_categorical of LightGBM's model text (faster than dump_model)."""
    header: dict[str, str] = {}
    trees: list[dict[str, str]] = []
    current = header
    pandas_categorical = None
    for line in text.splitlines():
        if line.startswith("Tree="):
            current = {}
            trees.append(current)
        elif line.startswith("end of trees"):
            current = {}
        elif line.startswith("pandas_categorical:"):
            pandas_categorical = json.loads(line.partition(":")[2])
        elif "=" in line:
            k, _, v = line.partition("=")
            current[k] = v
        elif line == "average_output":
            header["average_output"] = "1"
    return header, trees, pandas_categorical


def _tree(block: dict[str, str], max_path_features: int, max_unit_bits: int) -> _Tree:
    """One tree's arrays, each node's bit position on its path, each leaf's path features and ratios, and units."""
    if _ints(block.get("num_cat", "0"))[0] > 0:
        raise _Unsupported("categorical split")
    decision = _ints(block["decision_type"])
    if any(d & 1 for d in decision):
        raise _Unsupported("categorical split")
    ni = len(decision)
    feat = _ints(block["split_feature"])
    # child < 0 is leaf ~child: leaves become nodes ni..
    left = [c if c >= 0 else ni + ~c for c in _ints(block["left_child"])]
    right = [c if c >= 0 else ni + ~c for c in _ints(block["right_child"])]
    counts = [float(c) for c in _ints(block["internal_count"])] + [float(c) for c in _ints(block["leaf_count"])]
    leaf_value = _floats(block["leaf_value"])
    pos = [0] * ni
    path: list[list[int]] = [[] for _ in range(ni)]  # Q: distinct features above each internal node, in bit order
    leaf_feats: list[list[int]] = [[] for _ in leaf_value]
    leaf_r: list[list[float]] = [[] for _ in leaf_value]

    def walk(k: int, feats: list[int], ratios: list[float]) -> None:
        if k >= ni:
            if len(feats) > max_path_features:
                raise _Unsupported(f"{len(feats)} distinct features on a path")
            leaf_feats[k - ni], leaf_r[k - ni] = feats, ratios
            return
        path[k] = feats
        f = feat[k]
        p = feats.index(f) if f in feats else len(feats)
        pos[k] = p
        kids = feats if p < len(feats) else [*feats, f]
        for child in (left[k], right[k]):
            rs = [*ratios, 1.0] if p == len(ratios) else list(ratios)
            rs[p] *= counts[child] / counts[k]
            walk(child, kids, rs)

    walk(0, [], [])
    units: list[_Unit] = []

    def under(k: int, steps: list[tuple[int, int]], inner: list[int], leaves: list) -> None:
        """Internal nodes under k (preorder) and each leaf with its (node, went left) steps from k."""
        if k >= ni:
            leaves.append((k - ni, steps))
            return
        inner.append(k)
        under(left[k], [*steps, (k, 1)], inner, leaves)
        under(right[k], [*steps, (k, 0)], inner, leaves)

    n_inner = [0] * (2 * ni + 1)  # internal nodes under each node (children come after their parent)
    for k in range(ni - 1, -1, -1):
        n_inner[k] = 1 + n_inner[left[k]] + n_inner[right[k]]

    def select(k: int) -> None:
        # the largest subtrees whose tables stay small become units: one table row per subtree and row of X
        if k >= ni:
            d = len(leaf_feats[k - ni])
            units.append(_Unit(k, d, [], list(leaf_feats[k - ni]), [(k - ni, [], list(range(d)))]))
            return
        if len(path[k]) + n_inner[k] > max_unit_bits:
            select(left[k])
            select(right[k])
            return
        inner: list[int] = []
        leaves: list[tuple[int, list[tuple[int, int]]]] = []
        under(k, [], inner, leaves)
        feats = list(path[k])
        for j in inner:
            if feat[j] not in feats:
                feats.append(feat[j])
        slot = {j: i for i, j in enumerate(inner)}
        unit = _Unit(k, len(path[k]), inner, feats)
        for lf, steps in leaves:
            unit.members.append(
                (lf, [(slot[j], pos[j], went) for j, went in steps], [feats.index(f) for f in leaf_feats[lf]])
            )
        units.append(unit)

    if ni:
        select(0)
    return _Tree(
        feat=feat,
        thr=_floats(block["threshold"]),
        missing=[(d >> 2) & 3 for d in decision],
        default_left=[bool(d & 2) for d in decision],
        left=left,
        right=right,
        pos=pos,
        leaf_value=leaf_value,
        leaf_feats=leaf_feats,
        leaf_r=leaf_r,
        units=units,
    )


def _booster_of(model: lgb.Booster | lgb.LGBMModel) -> lgb.Booster:
    """The lgb.Booster of a Booster or a fitted scikit-learn wrapper."""
    return model.booster_ if isinstance(model, lgb.LGBMModel) else model


def _identity(booster: lgb.Booster) -> tuple:
    """What changes when a booster is retrained, rolled back or reloaded in place (model_from_string)."""
    handle = getattr(booster, "_handle", None)
    return (getattr(handle, "value", None), booster.current_iteration(), booster.best_iteration, booster.num_trees())


def _offsets(sizes: np.ndarray | list[int]) -> np.ndarray:
    """Start of each block in a concatenation of blocks of these sizes."""
    return np.concatenate([[0], np.cumsum(np.asarray(sizes, dtype=np.int64))])[:-1].astype(np.int64)


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted indices as (start, length)."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


class FastTreeShap:
    """SHAP values equal to LightGBM's pred_contrib (bias dropped), from tables built once per model."""

    def __init__(
        self,
        model: lgb.Booster | lgb.LGBMModel,
        threads: int | None = None,
        max_path_features: int = MAX_PATH_FEATURES,
        max_unit_bits: int = MAX_UNIT_BITS,
        max_table_bytes: int = MAX_TABLE_BYTES,
    ) -> None:
        """Precompute the tables of a fitted binary (single-output) LightGBM model."""
        self.booster = _booster_of(model)
        self.threads = threads
        self.identity = _identity(self.booster)
        # the model text predict uses: the best iteration's trees when early stopping set one
        header, blocks, pandas_categorical = _parse_model(self.booster.model_to_string())
        if int(header.get("num_tree_per_iteration", "1")) != 1:
            raise ValueError("FastTreeShap supports single-output (binary) models only, not multiclass")
        self.n_features = int(header["max_feature_idx"]) + 1
        self.n_trees = len(blocks)
        # the whole model through pred_contrib: what the tables do not model at all
        self.whole_fallback: str | None = None
        if "average_output" in header:
            self.whole_fallback = "averaged output (random forest)"
        elif any(b.get("is_linear", "0") != "0" for b in blocks):
            self.whole_fallback = "linear trees"
        elif pandas_categorical:
            self.whole_fallback = "pandas categorical features"
        trees: dict[int, _Tree] = {}
        self.fallback_trees: dict[int, str] = {}
        self.expected_value = 0.0
        for i, block in enumerate(blocks):
            if int(block["num_leaves"]) <= 1:
                self.expected_value += _floats(block["leaf_value"])[0]
                continue  # a single leaf moves only the bias
            root = _ints(block["internal_count"])[0]
            self.expected_value += float(np.dot(_floats(block["leaf_value"]), _ints(block["leaf_count"]))) / root
            if self.whole_fallback is None:
                try:
                    trees[i] = _tree(block, max_path_features, max_unit_bits)
                except _Unsupported as e:
                    self.fallback_trees[i] = str(e)
                except RecursionError:  # a path thousands of splits deep
                    self.fallback_trees[i] = "too deep"
        # the memory budget: the largest tables go through pred_contrib first
        budget = max_table_bytes // 8
        for i in sorted(trees, key=lambda i: trees[i].doubles()):
            budget -= trees[i].doubles()
            if budget < 0:
                self.fallback_trees[i] = "over the table memory budget"
                del trees[i]
        self._pack([trees[i] for i in sorted(trees)])

    def _pack(self, trees: list[_Tree]) -> None:
        """Concatenate the trees into flat arrays and build the tables."""
        i64 = np.int64

        def cat(values: list, dtype: type) -> np.ndarray:
            return np.array(values, dtype).reshape(-1)

        self.tree_internal = cat([len(t.feat) for t in trees], i64)
        self.tree_nodes = cat([2 * len(t.feat) + 1 for t in trees], i64)
        self.tree_node_start = _offsets(self.tree_internal)
        self.tree_units = cat([len(t.units) for t in trees], i64)
        self.tree_unit_start = _offsets(self.tree_units)
        self.node_feat = cat([v for t in trees for v in t.feat], i64)
        self.node_thr = cat([v for t in trees for v in t.thr], np.float64)
        self.node_missing = cat([v for t in trees for v in t.missing], i64)
        self.node_default_left = cat([v for t in trees for v in t.default_left], np.bool_)
        self.node_left = cat([v for t in trees for v in t.left], i64)
        self.node_right = cat([v for t in trees for v in t.right], i64)
        self.node_pos = cat([v for t in trees for v in t.pos], i64)
        units = [u for t in trees for u in t.units]
        self.unit_node = cat([u.node for u in units], i64)
        self.unit_qbits = cat([u.qbits for u in units], i64)
        self.unit_ndec = cat([len(u.decs) for u in units], i64)
        self.unit_dec_off = _offsets(self.unit_ndec)
        self.dec_node = cat([j for u in units for j in u.decs], i64)
        self.unit_nfeat = cat([len(u.feats) for u in units], i64)
        self.unit_feat_off = _offsets(self.unit_nfeat)
        self.unit_feats = cat([f for u in units for f in u.feats], i64)
        sizes = cat([u.doubles() for u in units], i64)
        self.unit_table_off = _offsets(sizes)
        self.table = np.zeros(int(sizes.sum()), np.float64)
        # leaves numbered across trees, for the table builder
        leaf_base = _offsets([len(t.leaf_value) for t in trees])
        leaf_depth = cat([len(f) for t in trees for f in t.leaf_feats], i64)
        leaf_r = cat([x for t in trees for r in t.leaf_r for x in r], np.float64)
        leaf_value = cat([v for t in trees for v in t.leaf_value], np.float64)
        members = [
            (int(leaf_base[ti]) + lf, steps, mp)
            for ti, t in enumerate(trees)
            for u in t.units
            for lf, steps, mp in u.members
        ]
        member_steps = cat([len(s) for _, s, _ in members], i64)
        steps = [st for _, s, _ in members for st in s]
        _unit_tables(
            leaf_depth,
            _offsets(leaf_depth),
            leaf_r,
            leaf_value,
            self.unit_qbits,
            self.unit_ndec,
            self.unit_nfeat,
            self.unit_table_off,
            _offsets([len(u.members) for u in units]),
            cat([len(u.members) for u in units], i64),
            cat([m[0] for m in members], i64),
            _offsets(member_steps),
            member_steps,
            _offsets([len(m[2]) for m in members]),
            cat([s[0] for s in steps], i64),
            cat([s[1] for s in steps], i64),
            cat([s[2] for s in steps], i64),
            cat([i for m in members for i in m[2]], i64),
            int(max([d << d for d in leaf_depth], default=1)),
            self.table,
        )

    def _matrix(self, X: pd.DataFrame | np.ndarray) -> np.ndarray | None:
        """X as a float64 features x rows array, or None when LightGBM would convert it in ways the kernel does not."""
        if isinstance(X, pd.DataFrame):
            if not all(pd.api.types.is_numeric_dtype(t) or pd.api.types.is_bool_dtype(t) for t in X.dtypes):
                return None  # categoricals, strings: LightGBM's own conversion applies
            # LightGBM reads float32 or float64: float32 -> float64 is exact
            arr = X.to_numpy(dtype=np.float64, na_value=np.nan)
        elif isinstance(X, np.ndarray) and X.dtype.kind in "biuf":
            arr = X.astype(np.float64, copy=False)
        else:
            return None  # sparse matrices, Arrow tables and the like
        if arr.ndim != 2 or arr.shape[1] != self.n_features:
            raise ValueError(f"X has shape {arr.shape}; the model has {self.n_features} features")
        # a DataFrame's float64 block is already column-major, so this transpose is usually free
        xt = np.ascontiguousarray(arr.T).view()
        xt.flags.writeable = False  # always read-only (pandas may hand out read-only views): one compiled kernel
        return xt

    def _threads(self) -> int:
        """Threads for the kernel: the constructor's, else numba's default (every core)."""
        return max(1, min(self.threads or numba.config.NUMBA_NUM_THREADS, numba.config.NUMBA_NUM_THREADS))

    def shap_values(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Per-row, per-feature SHAP values in raw (log-odds) space, without the bias column."""
        xt = None if self.whole_fallback else self._matrix(X)
        if xt is None:
            return np.asarray(self.booster.predict(X, pred_contrib=True))[:, :-1]
        n = xt.shape[1]
        outt = np.zeros((self.n_features, n), np.float64)
        if n and len(self.tree_node_start):
            threads = self._threads()
            # one chunk per thread for small batches; beyond, chunks small enough for the per-node masks to stay cached
            chunk = int(min(1024, max(16, -(-n // threads))))
            before = numba.get_num_threads()
            numba.set_num_threads(threads)
            try:
                _shap_kernel(
                    xt,
                    self.tree_node_start,
                    self.tree_internal,
                    self.tree_nodes,
                    self.tree_unit_start,
                    self.tree_units,
                    self.node_feat,
                    self.node_thr,
                    self.node_missing,
                    self.node_default_left,
                    self.node_left,
                    self.node_right,
                    self.node_pos,
                    self.unit_node,
                    self.unit_qbits,
                    self.unit_dec_off,
                    self.unit_ndec,
                    self.dec_node,
                    self.unit_nfeat,
                    self.unit_feat_off,
                    self.unit_feats,
                    self.unit_table_off,
                    self.table,
                    chunk,
                    outt,
                )
            finally:
                numba.set_num_threads(before)
        out = outt.T  # rows x features (a view, like pred_contrib[:, :-1])
        if n and self.fallback_trees:
            x = np.ascontiguousarray(xt.T)
            for start, count in _runs(sorted(self.fallback_trees)):
                part = self.booster.predict(x, pred_contrib=True, start_iteration=start, num_iteration=count)
                out += np.asarray(part)[:, :-1]
        return out


_CACHE: weakref.WeakKeyDictionary[lgb.Booster, FastTreeShap] = weakref.WeakKeyDictionary()


def for_model(model: lgb.Booster | lgb.LGBMModel, threads: int | None = None) -> FastTreeShap:
    """The cached FastTreeShap of a booster, rebuilt when it was retrained, rolled back or reloaded.

    In-place leaf edits (Booster.set_leaf_output, shuffle_models) are not detected: build a FastTreeShap afresh
    after those (hashing the model text on every call would cost ~10 ms, as much as 500 rows of SHAP values).
    """
    booster = _booster_of(model)
    cached = _CACHE.get(booster)
    if cached is not None and cached.identity == _identity(booster):
        cached.threads = threads
        return cached
    built = FastTreeShap(booster, threads=threads)
    _CACHE[booster] = built
    return built


def shap_values(
    model: lgb.Booster | lgb.LGBMModel, X: pd.DataFrame | np.ndarray, threads: int | None = None
) -> np.ndarray:
    """SHAP values equal to pred_contrib[:, :-1], with the model's tables cached across calls."""
    return for_model(model, threads).shap_values(X)
