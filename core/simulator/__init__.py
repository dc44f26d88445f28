"""A stateful simulator of the Customer Management v13 SOAP service, served on 127.0.0.1."""
