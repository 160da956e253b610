"""Everything that turns the user's model into a Prepared: loading, export, capture. [torch]"""
