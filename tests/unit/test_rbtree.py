"""kernel.rbtree: random insert and remove sequences keep the red-black properties and
the in-order traversal sorted; an augmented tree keeps its per-subtree values; a map's
entry tree (kernel.vm_map) stays balanced at 100k entries."""

from __future__ import annotations

import bisect
import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.rbtree import (
    RB_LEFT,
    RB_RIGHT,
    RBNode,
    RBTree,
    rbtree_check,
    rbtree_height,
    rbtree_inorder,
    rbtree_insert_rebalance,
    rbtree_remove,
    rbtree_rotate,
)
from kernel.vm_map import VMMap
from protocol.defs.mach import VM_PROT_READ
from protocol.vm_param import PAGE_SIZE as P


class Node(RBNode):
    __slots__ = ("key", "total")

    def __init__(self, key=0):
        super().__init__()
        self.key = key
        self.total = 0

    def __repr__(self):
        return f"<node {self.key}>"


class SumTree(RBTree):
    """Augmented: each node's ``total`` is the number of nodes in its subtree."""

    __slots__ = ()

    def _fix(self, node):
        left, right = node.rb_children
        node.total = 1 + left.total + right.total

    def augment_rotate(self, node, up):
        up.total = node.total
        self._fix(node)

    def augment_insert(self, node):
        node.total = 1
        p = node.rb_parent
        while p is not self.nil:
            p.total += 1
            p = p.rb_parent

    def augment_remove(self, parent):
        p = parent
        while p is not self.nil:
            self._fix(p)
            p = p.rb_parent


def insert(tree, key):
    nil = tree.nil
    parent, index, node = nil, RB_LEFT, tree.root
    while node is not nil:
        parent = node
        index = RB_LEFT if key < node.key else RB_RIGHT
        node = node.rb_children[index]
    n = Node(key)
    rbtree_insert_rebalance(tree, parent, index, n)
    return n


def find(tree, key):
    node = tree.root
    while node is not tree.nil and node.key != key:
        node = node.rb_children[RB_LEFT if key < node.key else RB_RIGHT]
    return None if node is tree.nil else node


def check(tree, model):
    order = rbtree_check(tree)
    assert [n.key for n in order] == model
    if isinstance(tree, SumTree):
        for n in order:
            left, right = n.rb_children
            assert n.total == 1 + left.total + right.total, n
    if model:
        assert rbtree_height(tree) <= 2 * (len(model) + 1).bit_length()
    else:
        assert tree.root is tree.nil and rbtree_height(tree) == 0


ops = st.lists(st.tuples(st.booleans(), st.integers(0, 60)), max_size=250)


@settings(max_examples=200, deadline=None)
@given(ops, st.booleans())
def test_random_insert_remove_keep_invariants(seq, augmented):
    tree = (SumTree if augmented else RBTree)(Node())
    model = []
    for add, key in seq:
        if add or not model:
            insert(tree, key)
            bisect.insort(model, key)
        else:
            key = model[key % len(model)]
            node = find(tree, key)
            rbtree_remove(tree, node)
            assert node.rb_parent is None and node.rb_children is None
            model.remove(key)
        check(tree, model)
    assert not tree.nil.rb_red and tree.nil.rb_parent is tree.nil


def test_sequential_inserts_stay_balanced_then_drain():
    tree = SumTree(Node())
    nodes = [insert(tree, k) for k in range(2000)]
    check(tree, list(range(2000)))
    assert tree.root.total == 2000
    rnd = random.Random(7)
    rnd.shuffle(nodes)
    left = sorted(n.key for n in nodes)
    for n in nodes[:1500]:
        rbtree_remove(tree, n)
        left.remove(n.key)
    check(tree, left)
    for n in nodes[1500:]:
        rbtree_remove(tree, n)
    check(tree, [])


def test_rotate_keeps_order_both_directions():
    tree = SumTree(Node())
    for k in (4, 2, 6, 1, 3, 5, 7):
        insert(tree, k)
    root = tree.root
    for direction in (RB_LEFT, RB_RIGHT):
        rbtree_rotate(tree, tree.root, direction)
        assert [n.key for n in rbtree_inorder(tree)] == list(range(1, 8))
        assert tree.root.total == 7
    assert tree.root is root  # left then right: back where it was


def test_check_reports_a_broken_tree():
    tree = RBTree(Node())
    for k in range(10):
        insert(tree, k)
    leaf = rbtree_check(tree)[0]
    leaf.rb_red = not leaf.rb_red
    try:
        rbtree_check(tree)
    except AssertionError:
        pass
    else:
        raise AssertionError("a recoloured leaf went unnoticed")


# ---------------------------------------------------------------- as vm_map uses it

def test_tree_stays_balanced_at_100k():
    n = 100_000
    m = VMMap(lookup="tree", merge="classic", max_offset=1 << 40)
    for i in range(n):  # ascending: the worst case for an unbalanced tree
        m.vm_map_enter(2 * i * P, P)
    bound = 2 * math.log2(n + 1)
    assert m.nentries == n and m.tree_height() <= bound
    m.check_consistency()
    rng = random.Random(7)
    victims = rng.sample(range(n), n // 2)
    for i in victims:
        m.vm_map_delete(2 * i * P, 2 * i * P + P)
    assert m.nentries == n - n // 2
    assert m.tree_height() <= 2 * math.log2(m.nentries + 1)
    # Random-order inserts into the freed slots.
    for i in victims[: n // 4]:
        m.vm_map_enter(2 * i * P, P, protection=VM_PROT_READ)
    assert m.tree_height() <= 2 * math.log2(m.nentries + 1)
    m.check_consistency()
    for _ in range(2000):
        i = rng.randrange(n)
        found, e = m.vm_map_lookup_entry(2 * i * P + 5)
        assert found == (e is not None and e.vme_start == 2 * i * P)
