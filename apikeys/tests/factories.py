from apikeys.services import api_key_create


def make_key(user, name: str = "laptop", **kwargs):
    """A key of `user` and its full text, as POST /api/api-keys/ makes them."""
    return api_key_create(user=user, name=name, **kwargs)
