"""What the warehouse raises: messages that say why and what to do."""


class WarehouseError(RuntimeError):
    """Anything the warehouse refuses to do, with a message that says why and what to do."""


class SchemaMismatch(WarehouseError):
    pass
