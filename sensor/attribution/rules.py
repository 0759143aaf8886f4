"""Operator rules: cgroup path regex -> image, for what no runtime describes (bare cgroups, unusual layouts).

>>> rule = ImageRule(r"^/batch/(?P<job>[a-z]+)$", "jobs/{job}:1")
>>> ident = rule.apply("/batch/nightly", node="n1")
>>> ident.image, ident.container_name, ident.container_id
('jobs/nightly:1', 'nightly', '/batch/nightly')
>>> rule.apply("/other", node="n1") is None
True
>>> split_image("registry:5000/team/app:1.2@sha256:ab")
('registry:5000/team/app', '1.2', 'sha256:ab')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from baseliner.models.vector import Identity


def split_image(image: str) -> tuple[str, str, str]:
    """``repo[:tag][@digest]`` -> (repository, tag, digest)."""
    digest = ""
    if "@" in image:
        image, digest = image.split("@", 1)
    repo, tag = image, ""
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        repo, tag = image[:colon], image[colon + 1:]
    return repo, tag, digest


@dataclass(frozen=True)
class ImageRule:
    """Cgroup path regex -> image.  ``image``/``namespace``/``pod``/``name`` may use ``{group}`` fields
    of the regex, e.g. ``ImageRule(r"^/baseliner-test/(?P<app>[^/]+)$", "test/{app}:1")``."""

    pattern: str
    image: str
    namespace: str = ""
    pod: str = ""
    name: str = ""
    _rx: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "_rx", re.compile(self.pattern))
        except re.error as e:
            raise ValueError(f"bad cgroup path pattern {self.pattern!r}: {e}") from None
        if not self.image:
            raise ValueError(f"rule {self.pattern!r} has an empty image")

    @classmethod
    def parse(cls, text: str) -> ImageRule:
        """``PATTERN=IMAGE`` (the CLI form)."""
        pattern, sep, image = text.rpartition("=")
        if not sep or not pattern:
            raise ValueError(f"expected PATTERN=IMAGE, got {text!r}")
        return cls(pattern=pattern, image=image)

    def apply(self, path: str, node: str) -> Identity | None:
        """The identity this rule gives a cgroup path, None when it does not match."""
        m = self._rx.search(path)
        if m is None:
            return None
        groups = {k: v or "" for k, v in m.groupdict().items()}
        try:
            repo, tag, digest = split_image(self.image.format(**groups))
            name = self.name.format(**groups) if self.name else path.rstrip("/").rsplit("/", 1)[-1]
            pod, namespace = self.pod.format(**groups), self.namespace.format(**groups)
        except (KeyError, IndexError) as e:
            raise ValueError(f"rule {self.pattern!r}: the image or a field names {e} which the pattern "
                             "does not capture") from None
        return Identity(node=node, container_id=path, image_repository=repo, image_tag=tag, image_digest=digest,
                        container_name=name, pod=pod, namespace=namespace)


def first_match(rules: tuple[ImageRule, ...], path: str, node: str) -> Identity | None:
    """The identity of the first rule matching ``path`` (rules are tried in order)."""
    for rule in rules:
        ident = rule.apply(path, node)
        if ident is not None:
            return ident
    return None
