"""Red-black trees (GNU Mach kern/rbtree.c, kern/rbtree.h).

As in GNU Mach, a node's children are one 2-element list indexed by direction
(``RB_LEFT``, ``RB_RIGHT``), so that rotations and the insert and remove fixups are
written once, with the direction as a variable, instead of as mirrored left and right
copies.  Unlike GNU Mach the leaves are one sentinel node per tree (``tree.nil``, black,
its children itself), which lets the remove fixup start at an empty position.

The tree does not compare keys: the caller walks down to the parent of the new node
and the direction to take there, then calls ``rbtree_insert_rebalance`` (as
``rbtree_insert`` does in GNU Mach with its compare function).

A tree that keeps a per-subtree value (the augmented trees of vm_map) subclasses
``RBTree`` and overrides the three ``augment_*`` hooks; the plain tree has none.
"""

from __future__ import annotations

RB_LEFT = 0
RB_RIGHT = 1


class RBNode:
    """struct rbtree_node: parent, children by direction, colour."""

    __slots__ = ("rb_parent", "rb_children", "rb_red")

    def __init__(self):
        self.rb_parent = self.rb_children = None
        self.rb_red = False


class RBTree:
    """struct rbtree: the root, or ``nil`` when the tree is empty."""

    __slots__ = ("root", "nil")

    def __init__(self, nil: RBNode):
        nil.rb_parent = nil
        nil.rb_children = [nil, nil]
        nil.rb_red = False
        self.nil = nil
        self.root = nil

    # Augmentation hooks (no-ops here).
    def augment_rotate(self, node: RBNode, up: RBNode):
        """``up`` (a child of ``node``) has just replaced ``node``, now its child."""

    def augment_insert(self, node: RBNode):
        """``node`` has just been linked as a leaf, before the rebalancing."""

    def augment_remove(self, parent: RBNode):
        """A node has just been unlinked; the subtrees that changed are those on the
        path from ``parent`` (possibly ``nil``) to the root.  Before the rebalancing."""


def rbtree_index(node: RBNode, parent: RBNode) -> int:
    """rbtree_node_index: the direction of ``node`` under ``parent``."""
    return RB_LEFT if parent.rb_children[RB_LEFT] is node else RB_RIGHT


def rbtree_rotate(tree: RBTree, node: RBNode, direction: int):
    """rbtree_rotate: ``node`` goes down on the ``direction`` side; its child on the
    other side takes its place."""
    nil = tree.nil
    other = 1 - direction
    up = node.rb_children[other]
    inner = up.rb_children[direction]
    node.rb_children[other] = inner
    if inner is not nil:
        inner.rb_parent = node
    parent = node.rb_parent
    up.rb_parent = parent
    if parent is nil:
        tree.root = up
    else:
        parent.rb_children[rbtree_index(node, parent)] = up
    up.rb_children[direction] = node
    node.rb_parent = up
    tree.augment_rotate(node, up)


def rbtree_insert_rebalance(tree: RBTree, parent: RBNode, index: int, node: RBNode):
    """rbtree_insert_rebalance: link ``node`` as the ``index`` child of ``parent``
    (``tree.nil``: as the root) and restore the red-black properties."""
    nil = tree.nil
    node.rb_children = [nil, nil]
    node.rb_red = True
    node.rb_parent = parent
    if parent is nil:
        tree.root = node
    else:
        parent.rb_children[index] = node
    tree.augment_insert(node)
    while node.rb_parent.rb_red:
        parent = node.rb_parent
        grand = parent.rb_parent
        left = rbtree_index(parent, grand)
        right = 1 - left
        uncle = grand.rb_children[right]
        if uncle.rb_red:
            parent.rb_red = uncle.rb_red = False
            grand.rb_red = True
            node = grand
            continue
        if node is parent.rb_children[right]:
            node = parent
            rbtree_rotate(tree, node, left)
            parent = node.rb_parent
        parent.rb_red = False
        grand.rb_red = True
        rbtree_rotate(tree, grand, right)
    tree.root.rb_red = False


def _transplant(tree: RBTree, old: RBNode, new: RBNode):
    parent = old.rb_parent
    if parent is tree.nil:
        tree.root = new
    else:
        parent.rb_children[rbtree_index(old, parent)] = new
    new.rb_parent = parent


def rbtree_remove(tree: RBTree, node: RBNode):
    """rbtree_remove: unlink ``node`` and restore the red-black properties; its links
    are cleared."""
    nil = tree.nil
    left, right = node.rb_children
    moved = node  # the node that leaves its position (node, or its successor)
    moved_red = node.rb_red
    if left is nil or right is nil:
        child = right if left is nil else left
        _transplant(tree, node, child)
    else:
        moved = right
        while moved.rb_children[RB_LEFT] is not nil:
            moved = moved.rb_children[RB_LEFT]
        moved_red = moved.rb_red
        child = moved.rb_children[RB_RIGHT]
        if moved.rb_parent is node:
            child.rb_parent = moved
        else:
            _transplant(tree, moved, child)
            moved.rb_children[RB_RIGHT] = right
            right.rb_parent = moved
        _transplant(tree, node, moved)
        moved.rb_children[RB_LEFT] = left
        left.rb_parent = moved
        moved.rb_red = node.rb_red
    tree.augment_remove(child.rb_parent)
    if not moved_red:
        _remove_rebalance(tree, child)
    nil.rb_parent = nil
    node.rb_children = node.rb_parent = None


def _remove_rebalance(tree: RBTree, node: RBNode):
    """The remove fixup: ``node`` (possibly nil) carries an extra black."""
    while node is not tree.root and not node.rb_red:
        parent = node.rb_parent
        left = rbtree_index(node, parent)
        right = 1 - left
        sibling = parent.rb_children[right]
        if sibling.rb_red:
            sibling.rb_red = False
            parent.rb_red = True
            rbtree_rotate(tree, parent, left)
            sibling = parent.rb_children[right]
        near, far = sibling.rb_children[left], sibling.rb_children[right]
        if not near.rb_red and not far.rb_red:
            sibling.rb_red = True
            node = parent
            continue
        if not far.rb_red:
            near.rb_red = False
            sibling.rb_red = True
            rbtree_rotate(tree, sibling, right)
            sibling = parent.rb_children[right]
        sibling.rb_red = parent.rb_red
        parent.rb_red = False
        sibling.rb_children[right].rb_red = False
        rbtree_rotate(tree, parent, left)
        node = tree.root
    node.rb_red = False


# ---------------------------------------------------------------- walking, checking

def rbtree_inorder(tree: RBTree) -> list:
    """The nodes in order (iteratively: a tree may be deeper than Python's stack)."""
    nil = tree.nil
    out, stack = [], []
    node = tree.root
    while stack or node is not nil:
        while node is not nil:
            stack.append(node)
            node = node.rb_children[RB_LEFT]
        node = stack.pop()
        out.append(node)
        node = node.rb_children[RB_RIGHT]
    return out


def rbtree_height(tree: RBTree) -> int:
    """The number of nodes on the longest path from the root (0 when empty)."""
    nil = tree.nil
    best = 0
    stack = [(tree.root, 1)] if tree.root is not nil else []
    while stack:
        node, depth = stack.pop()
        best = max(best, depth)
        for child in node.rb_children:
            if child is not nil:
                stack.append((child, depth + 1))
    return best


def rbtree_check(tree: RBTree) -> list:
    """Check the links and the red-black properties (the root and nil are black, no
    red node has a red child, every path has the same number of black nodes); returns
    the nodes in order.  Raises AssertionError.  O(n): for tests and debugging."""
    def need(cond, what):
        if not cond:
            raise AssertionError(what)

    nil, root = tree.nil, tree.root
    need(not nil.rb_red, "nil sentinel is red")
    need(root is nil or (root.rb_parent is nil and not root.rb_red), "root")
    black = {}  # id(node) -> black height below it, nil counting 1
    stack = [(root, False)] if root is not nil else []
    while stack:
        node, done = stack.pop()
        if not done:
            stack.append((node, True))
            for child in node.rb_children:
                if child is not nil:
                    need(child.rb_parent is node, f"parent link of {child!r}")
                    stack.append((child, False))
            continue
        heights = [black[id(c)] if c is not nil else 1 for c in node.rb_children]
        need(heights[RB_LEFT] == heights[RB_RIGHT], f"black height differs under {node!r}")
        if node.rb_red:
            need(not any(c.rb_red for c in node.rb_children), f"red node with red child {node!r}")
        black[id(node)] = heights[RB_LEFT] + (0 if node.rb_red else 1)
    return rbtree_inorder(tree)
