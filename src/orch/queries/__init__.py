"""The read side: status, history and graph, drift, and the SQL preview.  Nothing
here writes to a database.
"""
